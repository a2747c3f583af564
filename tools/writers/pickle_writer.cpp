// SPDX-License-Identifier: LGPL-2.1-or-later
#include "writers/pickle_writer.h"

#include "io/unpickler.h"

#include <limits>

namespace flashvsr::io {

void PickleWriter::le(uint64_t v, int n) {
  for (int i = 0; i < n; ++i) bytes_ += static_cast<char>((v >> (8 * i)) & 0xFF);
}

void PickleWriter::str(const std::string& s) {
  op('X');
  le(s.size(), 4);
  bytes_ += s;
}

void PickleWriter::global(const char* module, const char* name) {
  op('c');
  bytes_ += module;
  bytes_ += '\n';
  bytes_ += name;
  bytes_ += '\n';
}

void PickleWriter::integer(int64_t v) {
  if (v >= 0 && v < 256) {
    op('K');
    le(static_cast<uint64_t>(v), 1);
  } else if (v >= 0 && v < 65536) {
    op('M');
    le(static_cast<uint64_t>(v), 2);
  } else if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
    op('J');
    le(static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
  } else {
    op(0x8a);  // LONG1, 8 bytes two's complement
    op(8);
    le(static_cast<uint64_t>(v), 8);
  }
}

void PickleWriter::int_tuple(const std::vector<int64_t>& v) {
  op('(');
  for (int64_t x : v) integer(x);
  op('t');
}

void PickleWriter::empty_ordered_dict() {
  global("collections", "OrderedDict");
  op(')');
  op('R');
}

void PickleWriter::tensor(const at::Tensor& t, const std::string& key) {
  global("torch._utils", "_rebuild_tensor_v2");
  op('(');
  op('(');
  str("storage");
  global("torch", torch_storage_name(t.scalar_type()));
  str(key);
  str("cpu");
  integer(t.numel());
  op('t');
  op('Q');  // BINPERSID
  integer(0);
  int_tuple(t.sizes().vec());
  int_tuple(t.strides().vec());
  op(0x89);  // requires_grad = False
  empty_ordered_dict();
  op('t');
  op('R');
}

}  // namespace flashvsr::io
