// SPDX-License-Identifier: LGPL-2.1-or-later
// libFuzzer target: the torch.save zip/pickle reader (model/torch_archive.h), both entry points.
// Input: the bytes of a .pth/.ckpt file. Properties checked beyond "no crash":
//  - a file is never both a state dict and a single tensor;
//  - what loads is made of defined contiguous CPU tensors;
//  - writing it back with the project's writer and reading that gives bit-identical tensors.
// Every ZIP entry carries a CRC-32 that the reader checks, so random mutations of data.pkl almost never
// reach the pickle machine. A custom mutator therefore mostly takes the archive apart (stored entries),
// mutates one entry's contents -- data.pkl by preference -- and writes a consistent archive again (fresh
// CRCs, sizes, offsets, central directory). Inputs stay plain torch.save files.
#include "fuzz_support.h"
#include "io/torch_archive.h"
#include "writers/torch_archive_writer.h"

#include <c10/core/InferenceMode.h>

#include <cstring>
#include <random>
#include <vector>

using namespace flashvsr;
using namespace flashvsr::io;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  return 0;
}

namespace {

uint32_t crc32_of(const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

uint64_t get_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_le(std::vector<uint8_t>& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>((v >> (8 * i)) & 0xFF));
}

struct Entry {
  std::string name;
  std::vector<uint8_t> data;
};

// The stored entries of a ZIP file, read from its local headers in order; false if it is not such a file.
bool split_zip(const uint8_t* p, size_t size, std::vector<Entry>& entries) {
  size_t pos = 0;
  while (pos + 30 <= size && get_le(p + pos, 4) == 0x04034b50) {
    const uint64_t flags = get_le(p + pos + 6, 2), method = get_le(p + pos + 8, 2);
    uint64_t csize = get_le(p + pos + 18, 4);
    const size_t nlen = get_le(p + pos + 26, 2), xlen = get_le(p + pos + 28, 2);
    if (method != 0 || (flags & 8) || pos + 30 + nlen + xlen > size) return false;
    const uint8_t* extra = p + pos + 30 + nlen;
    if (csize == 0xFFFFFFFFu) {  // ZIP64: the sizes are in extra field 0x0001 (uncompressed, then compressed)
      bool found = false;
      for (size_t x = 0; x + 4 <= xlen;) {
        const uint64_t id = get_le(extra + x, 2), len = get_le(extra + x + 2, 2);
        if (x + 4 + len > xlen) break;
        if (id == 1 && len >= 16) {
          csize = get_le(extra + x + 12, 8);
          found = true;
          break;
        }
        x += 4 + len;
      }
      if (!found) return false;
    }
    const size_t start = pos + 30 + nlen + xlen;
    if (csize > size - start) return false;
    entries.push_back({std::string(reinterpret_cast<const char*>(p + pos + 30), nlen),
                       std::vector<uint8_t>(p + start, p + start + csize)});
    pos = start + csize;
  }
  return !entries.empty();
}

// A consistent ZIP file of stored entries (no ZIP64: fuzz inputs are far below 4 GB).
std::vector<uint8_t> join_zip(const std::vector<Entry>& entries) {
  std::vector<uint8_t> out, central;
  for (const auto& e : entries) {
    const uint32_t crc = crc32_of(e.data.data(), e.data.size());
    const uint64_t offset = out.size();
    put_le(out, 0x04034b50, 4);
    put_le(out, 20, 2);  // version needed
    put_le(out, 0, 2);   // flags
    put_le(out, 0, 2);   // stored
    put_le(out, 0, 4);   // time, date
    put_le(out, crc, 4);
    put_le(out, e.data.size(), 4);
    put_le(out, e.data.size(), 4);
    put_le(out, e.name.size(), 2);
    put_le(out, 0, 2);
    out.insert(out.end(), e.name.begin(), e.name.end());
    out.insert(out.end(), e.data.begin(), e.data.end());
    put_le(central, 0x02014b50, 4);
    put_le(central, 20, 2);  // made by
    put_le(central, 20, 2);  // needed
    put_le(central, 0, 2);
    put_le(central, 0, 2);
    put_le(central, 0, 4);
    put_le(central, crc, 4);
    put_le(central, e.data.size(), 4);
    put_le(central, e.data.size(), 4);
    put_le(central, e.name.size(), 2);
    put_le(central, 0, 2);  // extra
    put_le(central, 0, 2);  // comment
    put_le(central, 0, 2);  // disk
    put_le(central, 0, 2);  // internal attributes
    put_le(central, 0, 4);  // external attributes
    put_le(central, offset, 4);
    central.insert(central.end(), e.name.begin(), e.name.end());
  }
  const uint64_t cd_offset = out.size();
  out.insert(out.end(), central.begin(), central.end());
  put_le(out, 0x06054b50, 4);
  put_le(out, 0, 4);  // disk numbers
  put_le(out, entries.size(), 2);
  put_le(out, entries.size(), 2);
  put_le(out, central.size(), 4);
  put_le(out, cd_offset, 4);
  put_le(out, 0, 2);
  return out;
}

void check_plain(const std::string& what, const at::Tensor& t) {
  if (!t.defined() || !t.device().is_cpu() || !t.is_contiguous())
    fuzz::finding(what + " is not a defined contiguous CPU tensor");
}

}  // namespace

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  std::minstd_rand rng(seed);
  std::vector<Entry> entries;
  if (rng() % 5 != 0 && split_zip(data, size, entries)) {
    // data.pkl four times in five, else any entry (storages, byteorder, version, names).
    size_t pick = rng() % entries.size();
    if (rng() % 5 != 0)
      for (size_t i = 0; i < entries.size(); ++i)
        if (entries[i].name.size() >= 8 && entries[i].name.compare(entries[i].name.size() - 8, 8, "data.pkl") == 0) pick = i;
    Entry& e = entries[pick];
    if (rng() % 8 == 0) {
      // Sometimes the entry's name instead of its contents.
      std::vector<uint8_t> name(e.name.begin(), e.name.end());
      const size_t n = name.size();
      name.resize(n + 16);
      name.resize(LLVMFuzzerMutate(name.data(), n, name.size()));
      e.name.assign(name.begin(), name.end());
    } else {
      const size_t n = e.data.size();
      e.data.resize(n + 256);
      e.data.resize(LLVMFuzzerMutate(e.data.data(), n, e.data.size()));
    }
    std::vector<uint8_t> rebuilt = join_zip(entries);
    if (rebuilt.size() <= max_size) {
      std::memcpy(data, rebuilt.data(), rebuilt.size());
      return rebuilt.size();
    }
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::MemFile input("torch-in"), output("torch-out");
  c10::InferenceMode guard;
  input.write(data, size);

  TensorMap dict;
  const bool dict_ok = fuzz::accepts("read_torch_state_dict", [&] { dict = read_torch_state_dict(input.path()); });
  at::Tensor tensor;
  const bool tensor_ok = fuzz::accepts("read_torch_tensor", [&] { tensor = read_torch_tensor(input.path()); });
  if (dict_ok && tensor_ok) fuzz::finding("the same archive read both as a state dict and as a single tensor");

  if (dict_ok) {
    for (const auto& [name, t] : dict) check_plain("state dict entry '" + name + "'", t);
    // Alternate between the two container forms of the writer.
    const bool as_state_dict = size % 2 == 0;
    if (!fuzz::accepts("write_torch_state_dict", [&] { write_torch_state_dict(output.path(), dict, as_state_dict); }))
      fuzz::finding("write_torch_state_dict rejected tensors that read_torch_state_dict produced");
    TensorMap again;
    if (!fuzz::accepts("read_torch_state_dict (round trip)", [&] { again = read_torch_state_dict(output.path()); }))
      fuzz::finding("read_torch_state_dict rejected what write_torch_state_dict wrote");
    if (again.size() != dict.size()) fuzz::finding("round trip changed the number of entries");
    for (const auto& [name, t] : dict) {
      auto it = again.find(name);
      if (it == again.end() || !fuzz::same_tensor(t, it->second))
        fuzz::finding("round trip changed state dict entry '" + name + "'");
    }
  }
  if (tensor_ok) {
    check_plain("the single tensor", tensor);
    if (!fuzz::accepts("write_torch_tensor", [&] { write_torch_tensor(output.path(), tensor); }))
      fuzz::finding("write_torch_tensor rejected a tensor that read_torch_tensor produced");
    at::Tensor again;
    if (!fuzz::accepts("read_torch_tensor (round trip)", [&] { again = read_torch_tensor(output.path()); }))
      fuzz::finding("read_torch_tensor rejected what write_torch_tensor wrote");
    if (!fuzz::same_tensor(tensor, again)) fuzz::finding("round trip changed the single tensor");
  }
  return 0;
}
