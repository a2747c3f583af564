// SPDX-License-Identifier: LGPL-2.1-or-later
// Opcodes: CPython's Lib/pickletools.py (the reference list of every opcode, its argument and its effect).
#include "io/unpickler.h"

#include "error.h"

#include <cstring>
#include <limits>

namespace flashvsr::io {

namespace {

// Limits on hostile input.
constexpr size_t kMaxStack = size_t(1) << 20;  // pickle stack values
constexpr size_t kMaxMarks = size_t(1) << 16;
constexpr size_t kMaxMemo = size_t(1) << 21;
constexpr size_t kMaxObjects = size_t(1) << 21;
constexpr size_t kMaxRank = 64;
constexpr size_t kMaxGlobalName = 256;

using Type = PickleObject::Type;
using Kind = PickleValue::Kind;

struct StorageType {
  const char* name;
  at::ScalarType dtype;
};
const StorageType kStorageTypes[] = {
    {"FloatStorage", at::kFloat}, {"DoubleStorage", at::kDouble}, {"HalfStorage", at::kHalf},
    {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong}, {"IntStorage", at::kInt},
    {"ShortStorage", at::kShort}, {"CharStorage", at::kChar}, {"ByteStorage", at::kByte},
    {"BoolStorage", at::kBool},
};

const char* type_name(Type t) {
  switch (t) {
    case Type::Str: return "a string";
    case Type::Bytes: return "bytes";
    case Type::Tuple: return "a tuple";
    case Type::List: return "a list";
    case Type::Dict: return "a dict";
    case Type::Set: return "a set";
    case Type::Global: return "a class or function";
    case Type::Storage: return "a storage";
    case Type::Tensor: return "a tensor";
  }
  return "?";
}

// Overflow-checked arithmetic on non-negative int64 values; false on overflow.
bool mul_ok(int64_t a, int64_t b, int64_t* out) {
  if (a < 0 || b < 0) return false;
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}
bool add_ok(int64_t a, int64_t b, int64_t* out) {
  if (a < 0 || b < 0 || a > std::numeric_limits<int64_t>::max() - b) return false;
  *out = a + b;
  return true;
}

PickleValue ref(PickleObject* o) {
  PickleValue v;
  v.kind = Kind::Ref;
  v.o = o;
  return v;
}
PickleValue int_value(int64_t i) {
  PickleValue v;
  v.kind = Kind::Int;
  v.i = i;
  return v;
}
bool is(const PickleValue& v, Type t) { return v.kind == Kind::Ref && v.o->type == t; }

}  // namespace

const char* torch_storage_name(at::ScalarType dtype) {
  for (const auto& s : kStorageTypes)
    if (s.dtype == dtype) return s.name;
  return nullptr;
}

bool torch_storage_dtype(const std::string& name, at::ScalarType* dtype) {
  for (const auto& s : kStorageTypes)
    if (name == s.name) {
      *dtype = s.dtype;
      return true;
    }
  return false;
}

std::string describe(const PickleValue& v) {
  switch (v.kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "a bool";
    case Kind::Int: return "an int";
    case Kind::Float: return "a float";
    case Kind::Ref: return type_name(v.o->type);
  }
  return "?";
}

Unpickler::Unpickler(std::string context, std::string record_prefix, const std::string& pickle)
    : context_(std::move(context)),
      record_prefix_(std::move(record_prefix)),
      in_(pickle.data(), pickle.size(), context_, "pickle") {}

PickleValue Unpickler::run() {
  for (;;) {
    if (in_.left() == 0) fail("pickle ends without STOP");
    op_pos_ = in_.pos();
    const unsigned char op = in_.u8();
    switch (op) {
      case 0x80: {  // PROTO
        const unsigned v = in_.u8();
        if (v > 5) fail("unsupported pickle protocol " + std::to_string(v));
        break;
      }
      case 0x95: in_.u64(); break;  // FRAME: only a read-ahead hint
      case '.': return pop();       // STOP
      case '(':                     // MARK
        if (marks_.size() >= kMaxMarks) fail("too many nested MARKs");
        marks_.push_back(stack_.size());
        break;
      case '}': push(ref(make(Type::Dict))); break;
      case ']': push(ref(make(Type::List))); break;
      case ')': push(ref(make(Type::Tuple))); break;
      case 0x8f: push(ref(make(Type::Set))); break;
      case 't': {  // TUPLE
        const size_t m = pop_mark();
        PickleObject* t = make(Type::Tuple);
        t->items.assign(stack_.begin() + m, stack_.end());
        stack_.resize(m);
        push(ref(t));
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t k = op - 0x84;
        if (stack_.size() < base() + k) fail("stack underflow");
        PickleObject* t = make(Type::Tuple);
        t->items.assign(stack_.end() - k, stack_.end());
        stack_.resize(stack_.size() - k);
        push(ref(t));
        break;
      }
      case 's': {  // SETITEM
        const PickleValue v = pop();
        const PickleValue k = pop();
        dict_of(top())->dict.emplace_back(k, v);
        break;
      }
      case 'u': {  // SETITEMS
        const size_t m = pop_mark();
        if ((stack_.size() - m) % 2) fail("SETITEMS with an odd number of items");
        if (m == 0 || m <= base()) fail("SETITEMS without a dict");
        PickleObject* d = dict_of(stack_[m - 1]);
        for (size_t i = m; i < stack_.size(); i += 2) d->dict.emplace_back(stack_[i], stack_[i + 1]);
        stack_.resize(m);
        break;
      }
      case 'a': {  // APPEND
        const PickleValue v = pop();
        list_of(top(), Type::List)->items.push_back(v);
        break;
      }
      case 'e':     // APPENDS
      case 0x90: {  // ADDITEMS
        const size_t m = pop_mark();
        if (m == 0 || m <= base()) fail("APPENDS/ADDITEMS without a container");
        PickleObject* l = list_of(stack_[m - 1], op == 'e' ? Type::List : Type::Set);
        l->items.insert(l->items.end(), stack_.begin() + m, stack_.end());
        stack_.resize(m);
        break;
      }
      case 'J': push(int_value(static_cast<int32_t>(in_.u32()))); break;  // BININT
      case 'K': push(int_value(in_.u8())); break;                          // BININT1
      case 'M': push(int_value(in_.u16())); break;                         // BININT2
      case 0x8a: {                                                         // LONG1: n-byte two's complement
        const unsigned n = in_.u8();
        if (n > 8) fail("integer of " + std::to_string(n) + " bytes does not fit 64 bits");
        uint64_t v = n ? in_.le(static_cast<int>(n)) : 0;
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign-extend
        int64_t sv;
        std::memcpy(&sv, &v, 8);
        push(int_value(sv));
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        const uint64_t bits = in_.be(8);
        PickleValue f;
        f.kind = Kind::Float;
        std::memcpy(&f.f, &bits, 8);
        push(f);
        break;
      }
      case 'N': push(PickleValue{}); break;
      case 0x88:    // NEWTRUE
      case 0x89: {  // NEWFALSE
        PickleValue b;
        b.kind = Kind::Bool;
        b.i = op == 0x88;
        push(b);
        break;
      }
      case 'X': push(string_value(Type::Str, in_.u32())); break;  // BINUNICODE
      case 0x8c: push(string_value(Type::Str, in_.u8())); break;  // SHORT_BINUNICODE
      case 0x8d: push(string_value(Type::Str, in_.u64())); break;  // BINUNICODE8
      case 'T': push(string_value(Type::Str, in_.u32())); break;  // BINSTRING
      case 'U': push(string_value(Type::Str, in_.u8())); break;   // SHORT_BINSTRING
      case 'B': push(string_value(Type::Bytes, in_.u32())); break;  // BINBYTES
      case 'C': push(string_value(Type::Bytes, in_.u8())); break;   // SHORT_BINBYTES
      case 'c': {  // GLOBAL "module\nname\n"
        std::string module, name;
        if (!in_.take_until('\n', kMaxGlobalName, &module) || !in_.take_until('\n', kMaxGlobalName, &name))
          fail("GLOBAL name is unterminated or too long");
        push(ref(resolve_global(module, name)));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const PickleValue name = pop();
        const PickleValue module = pop();
        if (!is(module, Type::Str) || !is(name, Type::Str)) fail("STACK_GLOBAL needs two strings");
        push(ref(resolve_global(module.o->s, name.o->s)));
        break;
      }
      case 'R':     // REDUCE
      case 0x81: {  // NEWOBJ
        const PickleValue args = pop();
        const PickleValue callable = pop();
        push(call(callable, args, op == 0x81));
        break;
      }
      case 'b': {  // BUILD
        const PickleValue state = pop();
        const PickleValue inst = top();
        // Only the `_metadata` attribute that state_dict() attaches to an OrderedDict is accepted (and ignored).
        if (!is(inst, Type::Dict)) fail("BUILD on " + describe(inst) + " is not supported");
        if (!(state.kind == Kind::None || is(state, Type::Dict)))
          fail("BUILD of a dict with " + describe(state) + " state is not supported");
        break;
      }
      case 'Q': push(persistent_load(pop())); break;  // BINPERSID
      case 'q': memo_put(in_.u8(), top()); break;     // BINPUT
      case 'r': memo_put(in_.u32(), top()); break;    // LONG_BINPUT
      case 0x94: memo_put(memo_.size(), top()); break;  // MEMOIZE
      case 'h': push(memo_get(in_.u8())); break;      // BINGET
      case 'j': push(memo_get(in_.u32())); break;     // LONG_BINGET
      case '0': pop(); break;                         // POP
      case '1': stack_.resize(pop_mark()); break;     // POP_MARK
      case '2': push(top()); break;                   // DUP
      default: {
        static const char* hex = "0123456789abcdef";
        fail(std::string("unsupported pickle opcode 0x") + hex[op >> 4] + hex[op & 15]);
      }
    }
  }
}

void Unpickler::fail(const std::string& message) const {
  throw Error(Error::Kind::BadFile, context_ + " at byte " + std::to_string(op_pos_) + ": " + message);
}

PickleObject* Unpickler::make(Type t) {
  if (objects_.size() >= kMaxObjects) fail("too many objects");
  objects_.push_back(std::make_unique<PickleObject>(t));
  return objects_.back().get();
}

PickleValue Unpickler::string_value(Type t, uint64_t len) {
  if (len > in_.left()) fail("string of " + std::to_string(len) + " bytes runs past the end of the pickle");
  const unsigned char* b = in_.take(static_cast<size_t>(len));
  PickleObject* o = make(t);
  o->s.assign(reinterpret_cast<const char*>(b), static_cast<size_t>(len));
  return ref(o);
}

size_t Unpickler::base() const { return marks_.empty() ? 0 : marks_.back(); }

void Unpickler::push(const PickleValue& v) {
  if (stack_.size() >= kMaxStack) fail("pickle stack too deep");
  stack_.push_back(v);
}

PickleValue Unpickler::pop() {
  if (stack_.size() <= base()) fail("stack underflow");
  PickleValue v = stack_.back();
  stack_.pop_back();
  return v;
}

const PickleValue& Unpickler::top() const {
  if (stack_.size() <= base()) fail("stack underflow");
  return stack_.back();
}

size_t Unpickler::pop_mark() {
  if (marks_.empty()) fail("no MARK on the stack");
  const size_t m = marks_.back();
  marks_.pop_back();
  return m;
}

PickleObject* Unpickler::dict_of(const PickleValue& v) const {
  if (!is(v, Type::Dict)) fail("SETITEM(S) on " + describe(v) + ", expected a dict");
  return v.o;
}

PickleObject* Unpickler::list_of(const PickleValue& v, Type t) const {
  if (!is(v, t)) fail("APPEND/ADDITEMS on " + describe(v) + ", expected " + type_name(t));
  return v.o;
}

void Unpickler::memo_put(uint64_t key, const PickleValue& v) {
  if (memo_.size() >= kMaxMemo && !memo_.count(key)) fail("memo too large");
  memo_[key] = v;
}

PickleValue Unpickler::memo_get(uint64_t key) const {
  auto it = memo_.find(key);
  if (it == memo_.end()) fail("memo key " + std::to_string(key) + " was never stored");
  return it->second;
}

PickleObject* Unpickler::resolve_global(const std::string& module, const std::string& name) {
  PickleObject* g = make(Type::Global);
  if (module == "collections" && name == "OrderedDict") {
    g->global = PickleObject::Global::OrderedDict;
    return g;
  }
  if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
    g->global = PickleObject::Global::RebuildTensorV2;
    return g;
  }
  if (module == "torch" && torch_storage_dtype(name, &g->dtype)) {
    g->global = PickleObject::Global::Storage;
    return g;
  }
  std::string shown = (module + "." + name).substr(0, 200);
  for (char& ch : shown)
    if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) >= 0x7F) ch = '?';
  fail("forbidden global '" + shown + "' (only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and "
       "torch.*Storage are allowed)");
}

int64_t Unpickler::as_int(const PickleValue& v, const char* what) const {
  if (v.kind != Kind::Int) fail(std::string(what) + " is " + describe(v) + ", expected an int");
  return v.i;
}

std::vector<int64_t> Unpickler::int_tuple(const PickleValue& v, const char* what) const {
  if (!is(v, Type::Tuple)) fail(std::string(what) + " is " + describe(v) + ", expected a tuple");
  if (v.o->items.size() > kMaxRank)
    fail(std::string(what) + " has " + std::to_string(v.o->items.size()) + " dimensions, more than " +
         std::to_string(kMaxRank));
  std::vector<int64_t> out;
  for (const auto& item : v.o->items) {
    const int64_t x = as_int(item, what);
    if (x < 0) fail(std::string(what) + " has a negative entry " + std::to_string(x));
    out.push_back(x);
  }
  return out;
}

// ('storage', torch.<T>Storage, key, location, numel)
PickleValue Unpickler::persistent_load(const PickleValue& pid) {
  if (!is(pid, Type::Tuple) || pid.o->items.size() != 5)
    fail("persistent id is " + describe(pid) + ", expected a 5-tuple ('storage', type, key, location, numel)");
  const auto& it = pid.o->items;
  if (!is(it[0], Type::Str) || it[0].o->s != "storage") fail("persistent id does not start with 'storage'");
  if (!is(it[1], Type::Global) || it[1].o->global != PickleObject::Global::Storage)
    fail("persistent id storage type is " + describe(it[1]) + ", expected torch.<T>Storage");
  if (!is(it[2], Type::Str)) fail("persistent id key is " + describe(it[2]) + ", expected a string");
  if (!is(it[3], Type::Str)) fail("persistent id location is " + describe(it[3]) + ", expected a string");
  const at::ScalarType dtype = it[1].o->dtype;
  const std::string& key = it[2].o->s;
  const int64_t numel = as_int(it[4], "storage numel");
  int64_t nbytes;
  if (!mul_ok(numel, static_cast<int64_t>(at::elementSize(dtype)), &nbytes))
    fail("storage '" + record_prefix_ + key + "' has invalid numel " + std::to_string(numel));
  auto cached = storages_.find(key);
  if (cached != storages_.end()) {
    PickleObject* s = cached->second;
    if (s->dtype != dtype || s->numel != numel)
      fail("storage '" + record_prefix_ + key + "' is used with different types or sizes");
    return ref(s);
  }
  PickleObject* s = make(Type::Storage);
  s->dtype = dtype;
  s->numel = numel;
  s->s = key;
  storages_.emplace(key, s);
  storage_order_.push_back(s);
  return ref(s);
}

PickleValue Unpickler::call(const PickleValue& callable, const PickleValue& args, bool newobj) {
  if (!is(callable, Type::Global)) fail((newobj ? "NEWOBJ of " : "REDUCE of ") + describe(callable));
  if (!is(args, Type::Tuple)) fail("call arguments are " + describe(args) + ", expected a tuple");
  const PickleObject* g = callable.o;
  const auto& a = args.o->items;
  if (g->global == PickleObject::Global::OrderedDict) {
    if (!a.empty()) fail("collections.OrderedDict called with arguments");
    PickleObject* d = make(Type::Dict);
    d->ordered = true;
    return ref(d);
  }
  if (newobj || g->global != PickleObject::Global::RebuildTensorV2) fail("this global cannot be called here");
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (a.size() != 6 && a.size() != 7)
    fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(a.size()));
  if (!is(a[0], Type::Storage)) fail("_rebuild_tensor_v2 storage is " + describe(a[0]));
  PickleObject* storage = a[0].o;
  const int64_t offset = as_int(a[1], "storage offset");
  if (offset < 0) fail("negative storage offset " + std::to_string(offset));
  std::vector<int64_t> size = int_tuple(a[2], "tensor size");
  std::vector<int64_t> stride = int_tuple(a[3], "tensor stride");
  if (size.size() != stride.size())
    fail("tensor size " + shape_string(size) + " and stride " + shape_string(stride) + " differ in rank");
  if (a[4].kind != Kind::Bool && a[4].kind != Kind::Int) fail("requires_grad is " + describe(a[4]));
  if (!is(a[5], Type::Dict)) fail("backward_hooks is " + describe(a[5]) + ", expected a dict");
  // The highest element reached must lie inside the storage; an empty tensor reaches none.
  int64_t numel = 1;
  for (int64_t d : size)
    if (!mul_ok(numel, d, &numel)) fail("tensor size " + shape_string(size) + " overflows");
  const std::string where = "tensor of size " + shape_string(size) + ", stride " + shape_string(stride) +
                            ", offset " + std::to_string(offset) + " on storage '" + record_prefix_ + storage->s +
                            "' of " + std::to_string(storage->numel) + " elements";
  if (numel > 0) {
    int64_t last = offset;
    for (size_t i = 0; i < size.size(); ++i) {
      int64_t span;
      if (!mul_ok(size[i] - 1, stride[i], &span) || !add_ok(last, span, &last)) fail(where + " overflows");
    }
    if (last >= storage->numel) fail(where + " reads past the storage");
  } else if (offset > storage->numel) {
    fail(where + " starts past the storage");
  }
  PickleObject* t = make(Type::Tensor);
  t->storage = storage;
  t->dtype = storage->dtype;
  t->offset = offset;
  t->size = std::move(size);
  t->stride = std::move(stride);
  t->numel = numel;
  return ref(t);
}

}  // namespace flashvsr::io
