// SPDX-License-Identifier: LGPL-2.1-or-later
// A restricted pickle machine for the data.pkl of torch.save archives (LibTorch's torch::pickle_load
// cannot read state_dict() archives). It runs protocols 2 to 5 but builds only plain data (None, bools,
// ints, floats, strings, bytes, tuples, lists, sets, dicts) and knows three globals: collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 and torch.<T>Storage. Tensors come out as descriptions of views
// (storage key, offset, size, stride) checked to lie inside their storage; the storages' bytes live in
// the archive's data/<key> records, which the caller reads. Any other global, opcode or shape of data is
// a clear error, and the stack, memo and object count are bounded.
#pragma once

#include "io/byte_cursor.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace flashvsr::io {

// torch.<name> storage classes and their dtypes ("FloatStorage" <-> at::kFloat, ...).
const char* torch_storage_name(at::ScalarType dtype);  // nullptr for a dtype without one
bool torch_storage_dtype(const std::string& name, at::ScalarType* dtype);

struct PickleObject;

// A value on the pickle stack: a scalar, or a reference to an object owned by the Unpickler.
struct PickleValue {
  enum class Kind { None, Bool, Int, Float, Ref } kind = Kind::None;
  int64_t i = 0;  // Bool, Int
  double f = 0.0;
  PickleObject* o = nullptr;
};

struct PickleObject {
  enum class Type { Str, Bytes, Tuple, List, Dict, Set, Global, Storage, Tensor } type;
  enum class Global { OrderedDict, RebuildTensorV2, Storage };
  std::string s;                                          // Str, Bytes; Storage: the record key
  std::vector<PickleValue> items;                         // Tuple, List, Set
  std::vector<std::pair<PickleValue, PickleValue>> dict;  // Dict, in insertion order
  bool ordered = false;                                   // Dict: a collections.OrderedDict
  Global global = Global::OrderedDict;                    // Global
  at::ScalarType dtype = at::kFloat;                      // Global (Storage), Storage, Tensor
  int64_t numel = 0;                                      // Storage, Tensor: elements
  PickleObject* storage = nullptr;                        // Tensor
  int64_t offset = 0;                                     // Tensor: storage offset, in elements
  std::vector<int64_t> size, stride;                      // Tensor
  explicit PickleObject(Type t) : type(t) {}
};

// "a dict", "an int", "None", ... for error messages.
std::string describe(const PickleValue& v);

class Unpickler {
 public:
  // `context` prefixes every error: Error(BadFile) "<context> at byte N: <problem>" (e.g. context
  // "torch archive 'x.pt': archive/data.pkl"). The pickle bytes must outlive the Unpickler; the record of
  // storage key K is named `record_prefix` + K in errors.
  Unpickler(std::string context, std::string record_prefix, const std::string& pickle);

  // Runs the pickle to its STOP; the value left is the saved object. Objects live as long as the Unpickler.
  PickleValue run();
  // Every storage the pickle referred to (one per key), in order of first use.
  const std::vector<PickleObject*>& storages() const { return storage_order_; }

 private:
  std::string context_, record_prefix_;
  ByteCursor in_;
  size_t op_pos_ = 0;
  std::vector<PickleValue> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue> memo_;
  std::vector<std::unique_ptr<PickleObject>> objects_;  // owns everything; references may form cycles
  std::unordered_map<std::string, PickleObject*> storages_;
  std::vector<PickleObject*> storage_order_;

  [[noreturn]] void fail(const std::string& message) const;
  PickleObject* make(PickleObject::Type t);
  PickleValue string_value(PickleObject::Type t, uint64_t len);
  size_t base() const;
  void push(const PickleValue& v);
  PickleValue pop();
  const PickleValue& top() const;
  size_t pop_mark();
  PickleObject* dict_of(const PickleValue& v) const;
  PickleObject* list_of(const PickleValue& v, PickleObject::Type t) const;
  void memo_put(uint64_t key, const PickleValue& v);
  PickleValue memo_get(uint64_t key) const;
  PickleObject* resolve_global(const std::string& module, const std::string& name);
  int64_t as_int(const PickleValue& v, const char* what) const;
  std::vector<int64_t> int_tuple(const PickleValue& v, const char* what) const;
  PickleValue persistent_load(const PickleValue& pid);
  PickleValue call(const PickleValue& callable, const PickleValue& args, bool newobj);
};

}  // namespace flashvsr::io
