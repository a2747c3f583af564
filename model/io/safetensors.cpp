// SPDX-License-Identifier: LGPL-2.1-or-later
// The safetensors reader. The header is validated completely against the real file size before the
// file is mapped; tensors are views of the mapping (io/mapped_file.h).
#include "io/safetensors.h"

#include "error.h"
#include "io/file_util.h"
#include "io/json.h"
#include "io/mapped_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace flashvsr::io {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the limit of the reference implementation
constexpr size_t kMaxRank = 64;

[[noreturn]] void bad(const std::string& path, const std::string& msg) {
  throw Error(Error::Kind::BadFile, "safetensors file '" + path + "': " + msg);
}

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
const DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16}, {"I64", at::kLong},
    {"I32", at::kInt},    {"I16", at::kShort}, {"I8", at::kChar},   {"U8", at::kByte},       {"BOOL", at::kBool},
};

struct Entry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // relative to the data buffer
};

struct Header {
  uint64_t data_start = 0;
  std::vector<Entry> entries;  // in name order
};

Header read_header(ReadOnlyFile& file, const std::string& path) {
  require_little_endian("safetensors");
  if (file.size() < 8) bad(path, "file is " + std::to_string(file.size()) + " bytes, too short for the 8-byte header length");
  unsigned char len_bytes[8];
  file.read(0, len_bytes, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > file.size() - 8)
    bad(path, "header length " + std::to_string(n) + " exceeds the " + std::to_string(file.size() - 8) +
                  " bytes that follow it");
  if (n > kMaxHeaderBytes)
    bad(path, "header length " + std::to_string(n) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes));
  std::string text(n, '\0');
  file.read(8, text.data(), n);

  const std::string where = "safetensors file '" + path + "'";
  const Json root = parse_json(text, where + ": header");
  if (!root.is_object()) bad(path, "header is not a JSON object");

  Header h;
  h.data_start = 8 + n;
  const uint64_t buffer = file.size() - h.data_start;
  for (const auto& [key, v] : root.items()) {
    if (key == "__metadata__") {
      if (!v.is_object()) bad(path, "__metadata__ is not an object");
      for (const auto& [mk, mv] : v.items())
        if (!mv.is_string()) bad(path, "__metadata__ value of \"" + mk + "\" is not a string");
      continue;
    }
    const std::string t = "tensor '" + key + "'";
    if (!v.is_object()) bad(path, t + " is not described by an object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field)) bad(path, t + " lacks \"" + field + "\"");
    Entry e;
    e.name = key;
    const Json& dt = v.at("dtype");
    if (!dt.is_string()) bad(path, t + ": dtype is not a string");
    const std::string& dtype = dt.get_ref<const std::string&>();
    if (!safetensors_dtype(dtype, &e.dtype)) bad(path, t + ": unknown or unsupported dtype '" + dtype + "'");
    const Json& shape = v.at("shape");
    if (!shape.is_array()) bad(path, t + ": shape is not an array");
    if (shape.size() > kMaxRank)
      bad(path, t + ": shape has " + std::to_string(shape.size()) + " dimensions, more than " +
                    std::to_string(kMaxRank));
    uint64_t nbytes = at::elementSize(e.dtype);
    for (const auto& d : shape) {
      const int64_t dim = json_as<int64_t>(d, where + ": " + t + " shape");
      if (dim < 0) bad(path, t + ": negative dimension " + std::to_string(dim));
      e.shape.push_back(dim);
    }
    // Overflow-checked byte count; any zero dimension makes it zero.
    const bool empty = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
    if (empty) nbytes = 0;
    for (int64_t dim : e.shape) {
      if (empty) break;
      if (nbytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(dim))
        bad(path, t + ": shape " + shape_string(e.shape) + " is too large");
      nbytes *= static_cast<uint64_t>(dim);
    }
    const Json& offs = v.at("data_offsets");
    if (!offs.is_array() || offs.size() != 2) bad(path, t + ": data_offsets is not a [begin, end] pair");
    const int64_t b = json_as<int64_t>(offs[0], where + ": " + t + " data_offsets");
    const int64_t en = json_as<int64_t>(offs[1], where + ": " + t + " data_offsets");
    if (b < 0 || en < b)
      bad(path, t + ": invalid data_offsets [" + std::to_string(b) + ", " + std::to_string(en) + "]");
    if (static_cast<uint64_t>(en) > buffer)
      bad(path, t + ": data_offsets end " + std::to_string(en) + " is past the data buffer of " +
                    std::to_string(buffer) + " bytes");
    e.begin = static_cast<uint64_t>(b);
    e.end = static_cast<uint64_t>(en);
    if (e.end - e.begin != nbytes)
      bad(path, t + ": data_offsets span " + std::to_string(e.end - e.begin) + " bytes, expected " +
                    std::to_string(nbytes) + " for " + dtype + " " + shape_string(e.shape));
    h.entries.push_back(std::move(e));
  }
  std::sort(h.entries.begin(), h.entries.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });

  // The tensors must tile the buffer exactly: no overlap, no gap, nothing left over.
  std::vector<const Entry*> by_offset;
  for (const auto& e : h.entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t covered = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : by_offset) {
    if (e->begin < covered)
      bad(path, "tensor '" + e->name + "' [" + std::to_string(e->begin) + ", " + std::to_string(e->end) +
                    ") overlaps tensor '" + prev->name + "' [" + std::to_string(prev->begin) + ", " +
                    std::to_string(prev->end) + ")");
    if (e->begin > covered)
      bad(path, "data buffer bytes [" + std::to_string(covered) + ", " + std::to_string(e->begin) +
                    ") belong to no tensor (before tensor '" + e->name + "')");
    covered = e->end;
    prev = e;
  }
  if (covered != buffer)
    bad(path, "data buffer is " + std::to_string(buffer) + " bytes but the tensors cover " + std::to_string(covered));
  return h;
}

}  // namespace

bool safetensors_dtype(const std::string& name, at::ScalarType* dtype) {
  for (const auto& d : kDtypes)
    if (name == d.name) {
      *dtype = d.type;
      return true;
    }
  return false;
}

const char* safetensors_dtype_name(at::ScalarType dtype) {
  for (const auto& d : kDtypes)
    if (d.type == dtype) return d.name;
  return nullptr;
}

std::map<std::string, TensorInfo> read_safetensors_header(const std::string& path) {
  ReadOnlyFile file(path, "safetensors file");
  Header h = read_header(file, path);
  std::map<std::string, TensorInfo> out;
  for (auto& e : h.entries) out.emplace(e.name, TensorInfo{e.dtype, e.shape});
  return out;
}

TensorMap read_safetensors(const std::string& path) {
  ReadOnlyFile file(path, "safetensors file");
  const Header h = read_header(file, path);
  // read_header checked every tensor's bytes against the file's size; the mapping covers the whole file.
  const std::shared_ptr<MappedFile> mapping = MappedFile::map(file);
  const auto cpu = at::TensorOptions().device(at::kCPU);
  TensorMap out;
  for (const auto& e : h.entries) {
    const uint64_t offset = h.data_start + e.begin, nbytes = e.end - e.begin;
    const unsigned char* bytes = mapping->data() + offset;
    if (e.dtype == at::kBool) {
      // Only 0 and 1 are valid bool bytes; anything else would be undefined behaviour in kernels.
      for (uint64_t i = 0; i < nbytes; ++i)
        if (bytes[i] > 1) bad(path, "tensor '" + e.name + "': BOOL element " + std::to_string(i) + " is neither 0 nor 1");
    }
    at::Tensor t;
    if (nbytes == 0) {
      t = at::empty(e.shape, cpu.dtype(e.dtype));
    } else if (offset % at::elementSize(e.dtype) == 0) {
      t = tensor_view(mapping, offset, e.shape, e.dtype);
    } else {
      // The format does not require alignment: a tensor starting off its element size is copied.
      t = at::empty(e.shape, cpu.dtype(e.dtype));
      std::memcpy(t.data_ptr(), bytes, nbytes);
    }
    out.emplace(e.name, std::move(t));
  }
  return out;
}

}  // namespace flashvsr::io
