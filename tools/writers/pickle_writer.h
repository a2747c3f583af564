// SPDX-License-Identifier: LGPL-2.1-or-later
// Builds pickle (protocol 2) opcode streams of the shapes torch.save writes: strings, ints, int tuples,
// collections.OrderedDict and tensors as _rebuild_tensor_v2 calls on persistent storage ids. Test and
// tool code (model/io/unpickler.h reads them).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace flashvsr::io {

class PickleWriter {
 public:
  const std::string& bytes() const { return bytes_; }

  void op(unsigned char c) { bytes_ += static_cast<char>(c); }
  void str(const std::string& s);                           // BINUNICODE
  void global(const char* module, const char* name);        // GLOBAL
  void integer(int64_t v);                                  // the shortest of BININT1/BININT2/BININT/LONG1
  void int_tuple(const std::vector<int64_t>& v);
  void empty_ordered_dict();                                // collections.OrderedDict()
  // torch._utils._rebuild_tensor_v2(('storage', torch.<T>Storage, key, 'cpu', numel), 0, size, stride,
  // False, OrderedDict()) for a contiguous CPU tensor of a dtype with a storage class.
  void tensor(const at::Tensor& t, const std::string& key);

 private:
  std::string bytes_;
  void le(uint64_t v, int n);
};

}  // namespace flashvsr::io
