// SPDX-License-Identifier: LGPL-2.1-or-later
#include "io/torch_archive.h"

#include "error.h"
#include "io/file_util.h"
#include "io/unpickler.h"
#include "io/zip_reader.h"

#include <algorithm>
#include <map>
#include <memory>

namespace flashvsr::io {

namespace {

constexpr uint64_t kMaxPickleBytes = uint64_t(256) << 20;
constexpr uint64_t kMaxSmallRecord = 4096;  // byteorder, version

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Reads the archive, runs data.pkl, checks every storage against its record, and turns the requested
// tensors into owning contiguous tensors.
class ArchiveReader {
 public:
  explicit ArchiveReader(const std::string& path) : zip_(path, "torch archive") {
    require_little_endian("torch archive");
    // The archive prefix is whatever precedes "/data.pkl" (one path component).
    const ZipEntry* pkl = nullptr;
    for (const auto& e : zip_.entries()) {
      if (ends_with(e.name, "/data.pkl") && e.name.find('/') == e.name.size() - 9) {
        if (pkl) zip_.fail("more than one data.pkl ('" + pkl->name + "', '" + e.name + "')");
        pkl = &e;
      }
    }
    if (!pkl) zip_.fail("no <archive>/data.pkl entry (not a torch.save archive)");
    const std::string prefix = pkl->name.substr(0, pkl->name.size() - 9);
    if (const ZipEntry* bo = zip_.find(prefix + "/byteorder")) {
      const std::string order = zip_.read_small(*bo, kMaxSmallRecord);
      if (order != "little" && order != "little\n")
        zip_.fail("byteorder is '" + order.substr(0, 16) + "', only 'little' is supported");
    }
    if (const ZipEntry* ver = zip_.find(prefix + "/version")) {
      const std::string v = zip_.read_small(*ver, kMaxSmallRecord);
      size_t digits = 0;
      while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
      if (digits == 0 || (v.size() != digits && v.substr(digits) != "\n"))
        zip_.fail("version record '" + v.substr(0, 16) + "' is not a number");
    }
    pickle_ = zip_.read_small(*pkl, std::min(kMaxPickleBytes, zip_.file_size()));
    unpickler_ = std::make_unique<Unpickler>(zip_.context() + ": " + pkl->name, prefix + "/data/", pickle_);
    root_ = unpickler_->run();
    // Every storage the pickle names is a record of exactly numel x element-size bytes.
    for (const PickleObject* s : unpickler_->storages()) {
      const std::string record = prefix + "/data/" + s->s;
      const ZipEntry* e = zip_.find(record);
      if (!e) zip_.fail("storage record '" + record + "' is missing");
      const uint64_t nbytes = static_cast<uint64_t>(s->numel) * at::elementSize(s->dtype);
      if (e->usize != nbytes)
        zip_.fail("storage record '" + record + "' has " + std::to_string(e->usize) + " bytes, expected " +
                  std::to_string(nbytes) + " (" + std::to_string(s->numel) + " x " + torch_storage_name(s->dtype) +
                  ")");
      records_.emplace(s, e);
    }
  }

  TensorMap state_dict(const KeyFilter& keep, SkippedEntries* skipped) {
    if (root_.kind != PickleValue::Kind::Ref || root_.o->type != PickleObject::Type::Dict)
      zip_.fail("the saved object is " + describe(root_) + ", expected a dict of tensors");
    std::map<std::string, const PickleObject*> wanted;
    for (const auto& [k, v] : root_.o->dict) {
      if (k.kind != PickleValue::Kind::Ref || k.o->type != PickleObject::Type::Str)
        zip_.fail("a state dict key is " + describe(k) + ", expected a string");
      if (v.kind != PickleValue::Kind::Ref || v.o->type != PickleObject::Type::Tensor)
        zip_.fail("entry '" + k.o->s + "' is " + describe(v) + ", expected a tensor");
      wanted[k.o->s] = v.o;  // a repeated key replaces the earlier value, as in Python
    }
    // Filtered out before materialize: nothing of these entries is read or allocated (only their pickle
    // records, already parsed, and the storage checks of the constructor, which read no data).
    SkippedEntries left_out;
    if (keep) {
      for (auto it = wanted.begin(); it != wanted.end();) {
        if (keep(it->first)) {
          ++it;
          continue;
        }
        ++left_out.count;
        left_out.values += it->second->numel;
        it = wanted.erase(it);
      }
    }
    if (skipped) *skipped = left_out;
    return materialize(wanted);
  }

  at::Tensor tensor() {
    if (root_.kind != PickleValue::Kind::Ref || root_.o->type != PickleObject::Type::Tensor)
      zip_.fail("the saved object is " + describe(root_) + ", expected a tensor");
    return materialize({{"", root_.o}}).begin()->second;
  }

 private:
  ZipReader zip_;
  std::string pickle_;
  std::unique_ptr<Unpickler> unpickler_;
  PickleValue root_;
  std::map<const PickleObject*, const ZipEntry*> records_;  // storage -> its data/<key> record

  static bool is_contiguous(const PickleObject* t) {
    int64_t expected = 1;
    for (size_t i = t->size.size(); i-- > 0;) {
      if (t->size[i] != 1 && t->stride[i] != expected) return false;
      expected *= t->size[i];
    }
    return true;
  }

  void check_bool(const at::Tensor& t, const std::string& record) const {
    const auto* p = static_cast<const unsigned char*>(t.data_ptr());
    for (int64_t i = 0; i < t.numel(); ++i)
      if (p[i] > 1) zip_.fail("bool storage '" + record + "' holds a byte that is neither 0 nor 1");
  }

  TensorMap materialize(const std::map<std::string, const PickleObject*>& wanted) {
    // Output is bounded relative to the input so that stride-0 views cannot blow up memory.
    const uint64_t budget = std::min<uint64_t>(zip_.file_size(), uint64_t(1) << 56) * 64 + (uint64_t(64) << 20);
    uint64_t total = 0;
    std::map<const PickleObject*, std::vector<std::pair<std::string, const PickleObject*>>> by_storage;
    for (const auto& [name, t] : wanted) {
      const uint64_t item = at::elementSize(t->dtype);
      if (static_cast<uint64_t>(t->numel) > (budget - total) / item)
        zip_.fail("tensors would need more than " + std::to_string(budget) + " bytes, far more than the file holds");
      total += static_cast<uint64_t>(t->numel) * item;
      by_storage[t->storage].emplace_back(name, t);
    }
    TensorMap out;
    const auto cpu = at::TensorOptions().device(at::kCPU);
    for (auto& [storage, users] : by_storage) {
      const ZipEntry& record = *records_.at(storage);
      const PickleObject* first = users.front().second;
      if (users.size() == 1 && first->offset == 0 && first->numel == storage->numel && is_contiguous(first)) {
        // Common case: the tensor is its whole storage; read it in place.
        at::Tensor t = at::empty(first->size, cpu.dtype(first->dtype));
        if (storage->numel) zip_.read_into(record, t.data_ptr());
        if (t.scalar_type() == at::kBool) check_bool(t, record.name);
        out.emplace(users.front().first, std::move(t));
        continue;
      }
      at::Tensor flat = at::empty({storage->numel}, cpu.dtype(storage->dtype));
      if (storage->numel) zip_.read_into(record, flat.data_ptr());
      if (flat.scalar_type() == at::kBool) check_bool(flat, record.name);
      for (const auto& [name, t] : users) {
        at::Tensor dst = at::empty(t->size, cpu.dtype(t->dtype));
        if (t->numel) dst.copy_(flat.as_strided(t->size, t->stride, t->offset));
        out.emplace(name, std::move(dst));
      }
    }
    return out;
  }
};

}  // namespace

TensorMap read_torch_state_dict(const std::string& path) { return ArchiveReader(path).state_dict({}, nullptr); }

TensorMap read_torch_state_dict(const std::string& path, const KeyFilter& keep, SkippedEntries* skipped) {
  return ArchiveReader(path).state_dict(keep, skipped);
}

at::Tensor read_torch_tensor(const std::string& path) { return ArchiveReader(path).tensor(); }

}  // namespace flashvsr::io
