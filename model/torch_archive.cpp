// SPDX-License-Identifier: LGPL-2.1-or-later
// torch.save zip archives: a bounded ZIP reader (stored entries, ZIP64), a restricted pickle VM that only
// understands dicts/OrderedDicts of tensors, and a writer producing archives that torch.load accepts.
#include "torch_archive.h"

#include "file_util.h"

#include "error.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <unordered_map>

namespace flashvsr {

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Limits on hostile input.
constexpr uint64_t kMaxCentralDirectory = uint64_t(256) << 20;
constexpr uint64_t kMaxEntries = uint64_t(1) << 20;
constexpr uint64_t kMaxPickleBytes = uint64_t(256) << 20;
constexpr uint64_t kMaxSmallRecord = 4096;     // byteorder, version
constexpr size_t kMaxStack = size_t(1) << 20;  // pickle stack values
constexpr size_t kMaxMarks = size_t(1) << 16;
constexpr size_t kMaxMemo = size_t(1) << 21;
constexpr size_t kMaxObjects = size_t(1) << 21;
constexpr size_t kMaxRank = 64;
constexpr uint64_t kMaxGlobalName = 256;
constexpr uint64_t kIoChunk = uint64_t(16) << 20;

[[noreturn]] void bad(const std::string& path, const std::string& msg) {
  throw Error(Error::Kind::BadFile, "torch archive '" + path + "': " + msg);
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

// ---------------------------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), slicing by 8.
struct CrcTables {
  uint32_t t[8][256];
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};

const CrcTables& crc_tables() {
  static const CrcTables tables;
  return tables;
}

// `state` starts at 0xFFFFFFFF; the final CRC is ~state.
uint32_t crc_update(uint32_t state, const unsigned char* p, size_t n) {
  const auto& t = crc_tables().t;
  while (n >= 8) {
    uint32_t lo = state ^ (uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    state = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
            t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) state = (state >> 8) ^ t[0][(state ^ *p++) & 0xFF];
  return state;
}

uint32_t crc32(const void* data, size_t n) {
  return ~crc_update(0xFFFFFFFFu, static_cast<const unsigned char*>(data), n);
}

// ---------------------------------------------------------------------------------------------------------------
// Little-endian field access within a bounded buffer.
class Cursor {
 public:
  Cursor(const std::string& path, const unsigned char* data, size_t size, const char* what)
      : path_(path), data_(data), size_(size), what_(what) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  void need(size_t n) const {
    if (n > size_ - pos_) bad(path_, std::string("truncated ") + what_);
  }
  uint64_t le(int bytes) {
    need(bytes);
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | data_[pos_ + i];
    pos_ += bytes;
    return v;
  }
  uint16_t u16() { return static_cast<uint16_t>(le(2)); }
  uint32_t u32() { return static_cast<uint32_t>(le(4)); }
  uint64_t u64() { return le(8); }
  const unsigned char* take(size_t n) {
    need(n);
    const unsigned char* p = data_ + pos_;
    pos_ += n;
    return p;
  }

 private:
  const std::string& path_;
  const unsigned char* data_;
  size_t size_;
  const char* what_;
  size_t pos_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// ZIP reading.
struct ZipEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t csize = 0, usize = 0, local_offset = 0;
};

class ZipReader {
 public:
  explicit ZipReader(const std::string& path) : path_(path), file_(path, "torch archive") { parse_directory(); }

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_.size(); }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }

  // The whole (small) entry as bytes, CRC-checked.
  std::string read_small(const ZipEntry& e, uint64_t limit) {
    uint64_t start = data_start(e);
    if (e.usize > limit)
      bad(path_, "entry '" + e.name + "' is " + std::to_string(e.usize) + " bytes, more than the " +
                     std::to_string(limit) + " expected");
    std::string out(e.usize, '\0');
    if (e.usize) file_.read(start, out.data(), e.usize);
    check_crc(e, crc32(out.data(), out.size()));
    return out;
  }

  // The whole entry into `dst`, which holds exactly e.usize bytes, CRC-checked.
  void read_into(const ZipEntry& e, void* dst) {
    uint64_t start = data_start(e);
    auto* p = static_cast<unsigned char*>(dst);
    uint32_t state = 0xFFFFFFFFu;
    for (uint64_t done = 0; done < e.usize;) {
      uint64_t n = std::min(e.usize - done, kIoChunk);
      file_.read(start + done, p + done, n);
      state = crc_update(state, p + done, n);
      done += n;
    }
    check_crc(e, ~state);
  }

 private:
  std::string path_;
  ReadOnlyFile file_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
  uint64_t cd_offset_ = 0;

  void check_crc(const ZipEntry& e, uint32_t crc) {
    if (crc != e.crc)
      bad(path_, "entry '" + e.name + "' fails its CRC-32 check (stored " + std::to_string(e.crc) + ", computed " +
                     std::to_string(crc) + ")");
  }

  void parse_directory() {
    const uint64_t size = file_.size();
    if (size < 22) bad(path_, "file is " + std::to_string(size) + " bytes, too short for a zip archive");
    // End of central directory: 22 bytes plus a comment of up to 65535 bytes at the end of the file.
    const uint64_t tail_len = std::min<uint64_t>(size, 22 + 65535);
    std::vector<unsigned char> tail(tail_len);
    file_.read(size - tail_len, tail.data(), tail_len);
    int64_t found = -1;
    for (int64_t i = static_cast<int64_t>(tail_len) - 22; i >= 0; --i) {
      if (tail[i] == 'P' && tail[i + 1] == 'K' && tail[i + 2] == 5 && tail[i + 3] == 6) {
        uint64_t comment = tail[i + 20] | (uint64_t(tail[i + 21]) << 8);
        if (static_cast<uint64_t>(i) + 22 + comment <= tail_len) {
          found = i;
          break;
        }
      }
    }
    if (found < 0)
      bad(path_, "no zip end-of-central-directory record: the file is truncated or is not a torch.save zip "
                 "archive (the legacy pre-1.6 format is not supported)");
    const uint64_t eocd_pos = size - tail_len + static_cast<uint64_t>(found);
    Cursor c(path_, tail.data() + found, 22, "end-of-central-directory record");
    c.u32();
    uint64_t disk = c.u16(), cd_disk = c.u16(), disk_entries = c.u16(), total = c.u16();
    uint64_t cd_size = c.u32(), cd_offset = c.u32();
    uint64_t cd_limit = eocd_pos;  // the central directory ends before this

    // ZIP64: a locator right before the EOCD points at the ZIP64 end-of-central-directory record.
    if (eocd_pos >= 20) {
      unsigned char loc[20];
      file_.read(eocd_pos - 20, loc, 20);
      Cursor l(path_, loc, 20, "zip64 locator");
      if (l.u32() == 0x07064b50) {
        uint32_t rec_disk = l.u32();
        uint64_t rec_offset = l.u64();
        uint32_t disks = l.u32();
        if (rec_disk != 0 || disks > 1) bad(path_, "multi-disk zip archives are not supported");
        if (rec_offset > eocd_pos - 20 || eocd_pos - 20 - rec_offset < 56)
          bad(path_, "zip64 end-of-central-directory offset " + std::to_string(rec_offset) + " is out of range");
        unsigned char rec[56];
        file_.read(rec_offset, rec, 56);
        Cursor r(path_, rec, 56, "zip64 end-of-central-directory record");
        if (r.u32() != 0x06064b50) bad(path_, "bad zip64 end-of-central-directory signature");
        r.u64();  // record size
        r.u16();  // version made by
        r.u16();  // version needed
        disk = r.u32();
        cd_disk = r.u32();
        disk_entries = r.u64();
        total = r.u64();
        cd_size = r.u64();
        cd_offset = r.u64();
        cd_limit = rec_offset;
      }
    }
    if (disk != 0 || cd_disk != 0 || disk_entries != total) bad(path_, "multi-disk zip archives are not supported");
    if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
      bad(path_, "central directory [" + std::to_string(cd_offset) + ", +" + std::to_string(cd_size) +
                     ") is out of range");
    if (cd_size > kMaxCentralDirectory) bad(path_, "central directory of " + std::to_string(cd_size) + " bytes is too large");
    if (total > kMaxEntries || total * 46 > cd_size)
      bad(path_, "central directory of " + std::to_string(cd_size) + " bytes cannot hold " + std::to_string(total) +
                     " entries");
    cd_offset_ = cd_offset;

    std::vector<unsigned char> cd(cd_size);
    if (cd_size) file_.read(cd_offset, cd.data(), cd_size);
    Cursor d(path_, cd.data(), cd.size(), "central directory");
    entries_.reserve(total);
    for (uint64_t i = 0; i < total; ++i) {
      if (d.u32() != 0x02014b50) bad(path_, "bad central directory signature for entry " + std::to_string(i));
      ZipEntry e;
      d.u16();  // version made by
      d.u16();  // version needed
      e.flags = d.u16();
      e.method = d.u16();
      d.u32();  // time, date
      e.crc = d.u32();
      e.csize = d.u32();
      e.usize = d.u32();
      uint16_t name_len = d.u16(), extra_len = d.u16(), comment_len = d.u16();
      uint16_t disk_start = d.u16();
      d.u16();  // internal attributes
      d.u32();  // external attributes
      e.local_offset = d.u32();
      const unsigned char* name = d.take(name_len);
      e.name.assign(reinterpret_cast<const char*>(name), name_len);
      Cursor x(path_, d.take(extra_len), extra_len, "zip extra field");
      d.take(comment_len);
      while (x.left() >= 4) {
        uint16_t id = x.u16(), len = x.u16();
        Cursor f(path_, x.take(len), len, "zip64 extra field");
        if (id != 0x0001) continue;
        // Only the fields saturated in the fixed part are present, in this order.
        if (e.usize == 0xFFFFFFFFu) e.usize = f.u64();
        if (e.csize == 0xFFFFFFFFu) e.csize = f.u64();
        if (e.local_offset == 0xFFFFFFFFu) e.local_offset = f.u64();
        if (disk_start == 0xFFFF) disk_start = static_cast<uint16_t>(f.u32() == 0 ? 0 : 1);
      }
      if (disk_start != 0) bad(path_, "entry '" + e.name + "' is on another disk");
      if (e.local_offset > cd_offset || cd_offset - e.local_offset < 30)
        bad(path_, "entry '" + e.name + "' has local header offset " + std::to_string(e.local_offset) +
                       " outside the file data");
      if (!index_.emplace(e.name, entries_.size()).second) bad(path_, "duplicate zip entry '" + e.name + "'");
      entries_.push_back(std::move(e));
    }
  }

  // Offset of the entry's data, from its local header; checks the entry is readable.
  uint64_t data_start(const ZipEntry& e) {
    if (e.flags & 1) bad(path_, "entry '" + e.name + "' is encrypted");
    if (e.method != 0)
      bad(path_, "entry '" + e.name + "' is compressed (method " + std::to_string(e.method) +
                     "); only stored (uncompressed) entries are supported");
    if (e.csize != e.usize)
      bad(path_, "stored entry '" + e.name + "' has compressed size " + std::to_string(e.csize) +
                     " != size " + std::to_string(e.usize));
    unsigned char h[30];
    file_.read(e.local_offset, h, 30);
    Cursor c(path_, h, 30, "local file header");
    if (c.u32() != 0x04034b50) bad(path_, "bad local header signature for entry '" + e.name + "'");
    c.u16();
    c.u16();
    c.u16();
    c.u32();
    c.u32();
    c.u32();
    c.u32();
    uint64_t name_len = c.u16(), extra_len = c.u16();
    uint64_t start = e.local_offset + 30 + name_len + extra_len;
    if (start > cd_offset_ || e.usize > cd_offset_ - start)
      bad(path_, "entry '" + e.name + "' data [" + std::to_string(start) + ", +" + std::to_string(e.usize) +
                     ") runs into the central directory");
    std::string local_name(name_len, '\0');
    if (name_len) file_.read(e.local_offset + 30, local_name.data(), name_len);
    if (local_name != e.name) bad(path_, "local header name '" + local_name + "' != central name '" + e.name + "'");
    return start;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// The restricted pickle machine.
enum class GlobalKind { OrderedDict, RebuildTensorV2, Storage };

struct Obj;
struct Value {
  enum class K { None, Bool, Int, Float, Ref } k = K::None;
  int64_t i = 0;
  double f = 0.0;
  Obj* o = nullptr;
};

struct Obj {
  enum class T { Str, Bytes, Tuple, List, Dict, Set, Global, Storage, Tensor } t;
  std::string s;                                // Str, Bytes; Storage: record key
  std::vector<Value> items;                     // Tuple, List, Set
  std::vector<std::pair<Value, Value>> dict;    // Dict (in insertion order)
  bool ordered = false;                         // Dict: collections.OrderedDict
  GlobalKind global = GlobalKind::OrderedDict;  // Global
  at::ScalarType dtype = at::kFloat;            // Global (Storage), Storage, Tensor
  int64_t numel = 0;                            // Storage: elements
  const ZipEntry* record = nullptr;             // Storage
  Obj* storage = nullptr;                       // Tensor
  int64_t offset = 0;                           // Tensor
  std::vector<int64_t> size, stride;            // Tensor
  explicit Obj(T type) : t(type) {}
};

const char* obj_type_name(Obj::T t) {
  switch (t) {
    case Obj::T::Str: return "a string";
    case Obj::T::Bytes: return "bytes";
    case Obj::T::Tuple: return "a tuple";
    case Obj::T::List: return "a list";
    case Obj::T::Dict: return "a dict";
    case Obj::T::Set: return "a set";
    case Obj::T::Global: return "a class or function";
    case Obj::T::Storage: return "a storage";
    case Obj::T::Tensor: return "a tensor";
  }
  return "?";
}

std::string value_type_name(const Value& v) {
  switch (v.k) {
    case Value::K::None: return "None";
    case Value::K::Bool: return "a bool";
    case Value::K::Int: return "an int";
    case Value::K::Float: return "a float";
    case Value::K::Ref: return obj_type_name(v.o->t);
  }
  return "?";
}

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

const char* storage_name(at::ScalarType t) {
  for (const auto& s : kStorageTypes)
    if (s.dtype == t) return s.name;
  return nullptr;
}

class Unpickler {
 public:
  Unpickler(ZipReader& zip, const std::string& prefix, const std::string& pickle)
      : zip_(zip), prefix_(prefix), p_(reinterpret_cast<const unsigned char*>(pickle.data())), n_(pickle.size()) {}

  Value run() {
    for (;;) {
      if (pos_ >= n_) fail("pickle ends without STOP");
      op_pos_ = pos_;
      unsigned char op = p_[pos_++];
      switch (op) {
        case 0x80: {  // PROTO
          unsigned v = u8();
          if (v > 5) fail("unsupported pickle protocol " + std::to_string(v));
          break;
        }
        case 0x95: u64(); break;  // FRAME: only a read-ahead hint
        case '.': {               // STOP
          Value v = pop();
          return v;
        }
        case '(':  // MARK
          if (marks_.size() >= kMaxMarks) fail("too many nested MARKs");
          marks_.push_back(stack_.size());
          break;
        case '}': push(ref(make(Obj::T::Dict))); break;
        case ']': push(ref(make(Obj::T::List))); break;
        case ')': push(ref(make(Obj::T::Tuple))); break;
        case 0x8f: push(ref(make(Obj::T::Set))); break;
        case 't': {  // TUPLE
          size_t m = pop_mark();
          Obj* t = make(Obj::T::Tuple);
          t->items.assign(stack_.begin() + m, stack_.end());
          stack_.resize(m);
          push(ref(t));
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          size_t k = op - 0x84;
          if (stack_.size() < base() + k) fail("stack underflow");
          Obj* t = make(Obj::T::Tuple);
          t->items.assign(stack_.end() - k, stack_.end());
          stack_.resize(stack_.size() - k);
          push(ref(t));
          break;
        }
        case 's': {  // SETITEM
          Value v = pop();
          Value k = pop();
          dict_of(top())->dict.emplace_back(k, v);
          break;
        }
        case 'u': {  // SETITEMS
          size_t m = pop_mark();
          if ((stack_.size() - m) % 2) fail("SETITEMS with an odd number of items");
          if (m == 0 || m <= base()) fail("SETITEMS without a dict");
          Obj* d = dict_of(stack_[m - 1]);
          for (size_t i = m; i < stack_.size(); i += 2) d->dict.emplace_back(stack_[i], stack_[i + 1]);
          stack_.resize(m);
          break;
        }
        case 'a': {  // APPEND
          Value v = pop();
          list_of(top(), Obj::T::List)->items.push_back(v);
          break;
        }
        case 'e':      // APPENDS
        case 0x90: {   // ADDITEMS
          size_t m = pop_mark();
          if (m == 0 || m <= base()) fail("APPENDS/ADDITEMS without a container");
          Obj* l = list_of(stack_[m - 1], op == 'e' ? Obj::T::List : Obj::T::Set);
          l->items.insert(l->items.end(), stack_.begin() + m, stack_.end());
          stack_.resize(m);
          break;
        }
        case 'J': push(int_value(static_cast<int32_t>(static_cast<uint32_t>(le(4)))));  break;
        case 'K': push(int_value(u8())); break;
        case 'M': push(int_value(static_cast<int64_t>(le(2)))); break;
        case 0x8a: {  // LONG1
          unsigned n = u8();
          if (n > 8) fail("integer of " + std::to_string(n) + " bytes does not fit 64 bits");
          const unsigned char* b = take(n);
          uint64_t v = 0;
          for (int i = static_cast<int>(n) - 1; i >= 0; --i) v = (v << 8) | b[i];
          if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
          int64_t sv;
          std::memcpy(&sv, &v, 8);
          push(int_value(sv));
          break;
        }
        case 'G': {  // BINFLOAT, big-endian
          const unsigned char* b = take(8);
          uint64_t v = 0;
          for (int i = 0; i < 8; ++i) v = (v << 8) | b[i];
          Value f;
          f.k = Value::K::Float;
          std::memcpy(&f.f, &v, 8);
          push(f);
          break;
        }
        case 'N': push(Value{}); break;
        case 0x88:
        case 0x89: {
          Value b;
          b.k = Value::K::Bool;
          b.i = op == 0x88;
          push(b);
          break;
        }
        case 'X': push(string_value(Obj::T::Str, le(4))); break;
        case 0x8c: push(string_value(Obj::T::Str, u8())); break;
        case 0x8d: push(string_value(Obj::T::Str, u64())); break;
        case 'T': push(string_value(Obj::T::Str, le(4))); break;
        case 'U': push(string_value(Obj::T::Str, u8())); break;
        case 'B': push(string_value(Obj::T::Bytes, le(4))); break;
        case 'C': push(string_value(Obj::T::Bytes, u8())); break;
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = line();
          std::string name = line();
          push(ref(resolve_global(module, name)));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          Value name = pop();
          Value module = pop();
          if (!is(module, Obj::T::Str) || !is(name, Obj::T::Str)) fail("STACK_GLOBAL needs two strings");
          push(ref(resolve_global(module.o->s, name.o->s)));
          break;
        }
        case 'R':      // REDUCE
        case 0x81: {   // NEWOBJ
          Value args = pop();
          Value callable = pop();
          push(call(callable, args, op == 0x81));
          break;
        }
        case 'b': {  // BUILD
          Value state = pop();
          Value inst = top();
          // Only the `_metadata` attribute that state_dict() attaches to an OrderedDict is accepted (and ignored).
          if (!is(inst, Obj::T::Dict))
            fail("BUILD on " + value_type_name(inst) + " is not supported");
          if (!(state.k == Value::K::None || is(state, Obj::T::Dict)))
            fail("BUILD of a dict with " + value_type_name(state) + " state is not supported");
          break;
        }
        case 'Q': push(persistent_load(pop())); break;  // BINPERSID
        case 'q': memo_put(u8(), top()); break;
        case 'r': memo_put(le(4), top()); break;
        case 0x94: memo_put(memo_.size(), top()); break;
        case 'h': push(memo_get(u8())); break;
        case 'j': push(memo_get(le(4))); break;
        case '0': pop(); break;  // POP
        case '1': stack_.resize(pop_mark()); break;  // POP_MARK
        case '2': push(top()); break;  // DUP
        default: {
          static const char* hex = "0123456789abcdef";
          fail(std::string("unsupported pickle opcode 0x") + hex[op >> 4] + hex[op & 15]);
        }
      }
    }
  }

  std::string describe(const Value& v) const { return value_type_name(v); }

 private:
  ZipReader& zip_;
  std::string prefix_;
  const unsigned char* p_;
  size_t n_;
  size_t pos_ = 0, op_pos_ = 0;
  std::vector<Value> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value> memo_;
  std::vector<std::unique_ptr<Obj>> objects_;  // owns everything; references may form cycles
  std::unordered_map<std::string, Obj*> storages_;

  [[noreturn]] void fail(const std::string& msg) const {
    bad(zip_.path(), prefix_ + "/data.pkl at byte " + std::to_string(op_pos_) + ": " + msg);
  }

  const unsigned char* take(uint64_t n) {
    if (n > n_ - pos_) fail("truncated pickle");
    const unsigned char* b = p_ + pos_;
    pos_ += n;
    return b;
  }
  unsigned u8() { return *take(1); }
  uint64_t le(int bytes) {
    const unsigned char* b = take(bytes);
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  uint64_t u64() { return le(8); }
  std::string line() {
    const unsigned char* start = p_ + pos_;
    const void* nl = std::memchr(start, '\n', std::min<uint64_t>(n_ - pos_, kMaxGlobalName + 1));
    if (!nl) fail("GLOBAL name is unterminated or too long");
    size_t len = static_cast<const unsigned char*>(nl) - start;
    pos_ += len + 1;
    return std::string(reinterpret_cast<const char*>(start), len);
  }

  Obj* make(Obj::T t) {
    if (objects_.size() >= kMaxObjects) fail("too many objects");
    objects_.push_back(std::make_unique<Obj>(t));
    return objects_.back().get();
  }
  static Value ref(Obj* o) {
    Value v;
    v.k = Value::K::Ref;
    v.o = o;
    return v;
  }
  static Value int_value(int64_t i) {
    Value v;
    v.k = Value::K::Int;
    v.i = i;
    return v;
  }
  static bool is(const Value& v, Obj::T t) { return v.k == Value::K::Ref && v.o->t == t; }
  Value string_value(Obj::T t, uint64_t len) {
    const unsigned char* b = take(len);
    Obj* o = make(t);
    o->s.assign(reinterpret_cast<const char*>(b), len);
    return ref(o);
  }

  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(const Value& v) {
    if (stack_.size() >= kMaxStack) fail("pickle stack too deep");
    stack_.push_back(v);
  }
  Value pop() {
    if (stack_.size() <= base()) fail("stack underflow");
    Value v = stack_.back();
    stack_.pop_back();
    return v;
  }
  const Value& top() const {
    if (stack_.size() <= base()) fail("stack underflow");
    return stack_.back();
  }
  size_t pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    size_t m = marks_.back();
    marks_.pop_back();
    return m;
  }
  Obj* dict_of(const Value& v) const {
    if (!is(v, Obj::T::Dict)) fail("SETITEM(S) on " + value_type_name(v) + ", expected a dict");
    return v.o;
  }
  Obj* list_of(const Value& v, Obj::T t) const {
    if (!is(v, t)) fail("APPEND/ADDITEMS on " + value_type_name(v) + ", expected " + obj_type_name(t));
    return v.o;
  }
  void memo_put(uint64_t key, const Value& v) {
    if (memo_.size() >= kMaxMemo && !memo_.count(key)) fail("memo too large");
    memo_[key] = v;
  }
  Value memo_get(uint64_t key) const {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo key " + std::to_string(key) + " was never stored");
    return it->second;
  }

  Obj* resolve_global(const std::string& module, const std::string& name) {
    Obj* g = make(Obj::T::Global);
    if (module == "collections" && name == "OrderedDict") {
      g->global = GlobalKind::OrderedDict;
      return g;
    }
    if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      g->global = GlobalKind::RebuildTensorV2;
      return g;
    }
    if (module == "torch")
      for (const auto& s : kStorageTypes)
        if (name == s.name) {
          g->global = GlobalKind::Storage;
          g->dtype = s.dtype;
          return g;
        }
    std::string shown = (module + "." + name).substr(0, 200);
    for (char& ch : shown)
      if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) >= 0x7F) ch = '?';
    fail("forbidden global '" + shown + "' (only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and "
         "torch.*Storage are allowed)");
  }

  int64_t as_int(const Value& v, const char* what) const {
    if (v.k != Value::K::Int) fail(std::string(what) + " is " + value_type_name(v) + ", expected an int");
    return v.i;
  }

  std::vector<int64_t> int_tuple(const Value& v, const char* what) const {
    if (!is(v, Obj::T::Tuple)) fail(std::string(what) + " is " + value_type_name(v) + ", expected a tuple");
    if (v.o->items.size() > kMaxRank)
      fail(std::string(what) + " has " + std::to_string(v.o->items.size()) + " dimensions, more than " +
           std::to_string(kMaxRank));
    std::vector<int64_t> out;
    for (const auto& item : v.o->items) {
      int64_t x = as_int(item, what);
      if (x < 0) fail(std::string(what) + " has a negative entry " + std::to_string(x));
      out.push_back(x);
    }
    return out;
  }

  // ('storage', torch.<T>Storage, key, location, numel)
  Value persistent_load(const Value& pid) {
    if (!is(pid, Obj::T::Tuple) || pid.o->items.size() != 5)
      fail("persistent id is " + value_type_name(pid) + ", expected a 5-tuple ('storage', type, key, location, numel)");
    const auto& it = pid.o->items;
    if (!is(it[0], Obj::T::Str) || it[0].o->s != "storage") fail("persistent id does not start with 'storage'");
    if (!is(it[1], Obj::T::Global) || it[1].o->global != GlobalKind::Storage)
      fail("persistent id storage type is " + value_type_name(it[1]) + ", expected torch.<T>Storage");
    if (!is(it[2], Obj::T::Str)) fail("persistent id key is " + value_type_name(it[2]) + ", expected a string");
    if (!is(it[3], Obj::T::Str)) fail("persistent id location is " + value_type_name(it[3]) + ", expected a string");
    const at::ScalarType dtype = it[1].o->dtype;
    const std::string& key = it[2].o->s;
    int64_t numel = as_int(it[4], "storage numel");
    const std::string record = prefix_ + "/data/" + key;
    int64_t nbytes;
    if (!mul_ok(numel, static_cast<int64_t>(at::elementSize(dtype)), &nbytes))
      fail("storage '" + record + "' has invalid numel " + std::to_string(numel));
    auto cached = storages_.find(key);
    if (cached != storages_.end()) {
      Obj* s = cached->second;
      if (s->dtype != dtype || s->numel != numel)
        fail("storage '" + record + "' is used with different types or sizes");
      return ref(s);
    }
    const ZipEntry* e = zip_.find(record);
    if (!e) fail("storage record '" + record + "' is missing");
    if (e->usize != static_cast<uint64_t>(nbytes))
      fail("storage record '" + record + "' has " + std::to_string(e->usize) + " bytes, expected " +
           std::to_string(nbytes) + " (" + std::to_string(numel) + " x " + storage_name(dtype) + ")");
    Obj* s = make(Obj::T::Storage);
    s->dtype = dtype;
    s->numel = numel;
    s->s = key;
    s->record = e;
    storages_.emplace(key, s);
    return ref(s);
  }

  Value call(const Value& callable, const Value& args, bool newobj) {
    if (!is(callable, Obj::T::Global)) fail((newobj ? "NEWOBJ of " : "REDUCE of ") + value_type_name(callable));
    if (!is(args, Obj::T::Tuple)) fail("call arguments are " + value_type_name(args) + ", expected a tuple");
    const Obj* g = callable.o;
    const auto& a = args.o->items;
    if (g->global == GlobalKind::OrderedDict) {
      if (!a.empty()) fail("collections.OrderedDict called with arguments");
      Obj* d = make(Obj::T::Dict);
      d->ordered = true;
      return ref(d);
    }
    if (newobj || g->global != GlobalKind::RebuildTensorV2) fail("this global cannot be called here");
    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (a.size() != 6 && a.size() != 7)
      fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(a.size()));
    if (!is(a[0], Obj::T::Storage)) fail("_rebuild_tensor_v2 storage is " + value_type_name(a[0]));
    Obj* storage = a[0].o;
    int64_t offset = as_int(a[1], "storage offset");
    if (offset < 0) fail("negative storage offset " + std::to_string(offset));
    std::vector<int64_t> size = int_tuple(a[2], "tensor size");
    std::vector<int64_t> stride = int_tuple(a[3], "tensor stride");
    if (size.size() != stride.size())
      fail("tensor size " + shape_string(size) + " and stride " + shape_string(stride) + " differ in rank");
    if (a[4].k != Value::K::Bool && a[4].k != Value::K::Int) fail("requires_grad is " + value_type_name(a[4]));
    if (!is(a[5], Obj::T::Dict)) fail("backward_hooks is " + value_type_name(a[5]) + ", expected a dict");
    // The highest element reached must lie inside the storage; an empty tensor reaches none.
    int64_t numel = 1;
    for (int64_t d : size)
      if (!mul_ok(numel, d, &numel)) fail("tensor size " + shape_string(size) + " overflows");
    const std::string where = "tensor of size " + shape_string(size) + ", stride " + shape_string(stride) +
                              ", offset " + std::to_string(offset) + " on storage '" + prefix_ + "/data/" +
                              storage->s + "' of " + std::to_string(storage->numel) + " elements";
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
    Obj* t = make(Obj::T::Tensor);
    t->storage = storage;
    t->dtype = storage->dtype;
    t->offset = offset;
    t->size = std::move(size);
    t->stride = std::move(stride);
    t->numel = numel;
    return ref(t);
  }
};

// Reads the archive, runs data.pkl and turns the requested tensors into owning contiguous tensors.
class ArchiveReader {
 public:
  explicit ArchiveReader(const std::string& path) : zip_(path) {
    require_little_endian("torch archive");
    // The archive prefix is whatever precedes "/data.pkl".
    const ZipEntry* pkl = nullptr;
    for (const auto& e : zip_.entries()) {
      const std::string suffix = "/data.pkl";
      if (e.name.size() > suffix.size() && e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
          e.name.find('/') == e.name.size() - suffix.size()) {
        if (pkl) bad(path, "more than one data.pkl ('" + pkl->name + "', '" + e.name + "')");
        pkl = &e;
      }
    }
    if (!pkl) bad(path, "no <archive>/data.pkl entry (not a torch.save archive)");
    prefix_ = pkl->name.substr(0, pkl->name.size() - 9);
    if (const ZipEntry* bo = zip_.find(prefix_ + "/byteorder")) {
      std::string order = zip_.read_small(*bo, kMaxSmallRecord);
      if (order != "little" && order != "little\n")
        bad(path, "byteorder is '" + order.substr(0, 16) + "', only 'little' is supported");
    }
    if (const ZipEntry* ver = zip_.find(prefix_ + "/version")) {
      std::string v = zip_.read_small(*ver, kMaxSmallRecord);
      size_t digits = 0;
      while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
      if (digits == 0 || (v.size() != digits && v.substr(digits) != "\n"))
        bad(path, "version record '" + v.substr(0, 16) + "' is not a number");
    }
    pickle_ = zip_.read_small(*pkl, std::min(kMaxPickleBytes, zip_.file_size()));
    unpickler_ = std::make_unique<Unpickler>(zip_, prefix_, pickle_);
    root_ = unpickler_->run();
  }

  TensorMap state_dict() {
    if (root_.k != Value::K::Ref || root_.o->t != Obj::T::Dict)
      bad(zip_.path(), "the saved object is " + unpickler_->describe(root_) + ", expected a dict of tensors");
    std::map<std::string, Obj*> wanted;
    for (const auto& [k, v] : root_.o->dict) {
      if (k.k != Value::K::Ref || k.o->t != Obj::T::Str)
        bad(zip_.path(), "a state dict key is " + unpickler_->describe(k) + ", expected a string");
      if (v.k != Value::K::Ref || v.o->t != Obj::T::Tensor)
        bad(zip_.path(), "entry '" + k.o->s + "' is " + unpickler_->describe(v) + ", expected a tensor");
      wanted[k.o->s] = v.o;  // a repeated key replaces the earlier value, as in Python
    }
    return materialize(wanted);
  }

  at::Tensor tensor() {
    if (root_.k != Value::K::Ref || root_.o->t != Obj::T::Tensor)
      bad(zip_.path(), "the saved object is " + unpickler_->describe(root_) + ", expected a tensor");
    return materialize({{"", root_.o}}).begin()->second;
  }

 private:
  ZipReader zip_;
  std::string prefix_;
  std::string pickle_;
  std::unique_ptr<Unpickler> unpickler_;
  Value root_;

  static bool is_contiguous(const Obj* t) {
    int64_t expected = 1;
    for (size_t i = t->size.size(); i-- > 0;) {
      if (t->size[i] != 1 && t->stride[i] != expected) return false;
      expected *= t->size[i];
    }
    return true;
  }

  void check_bool(const at::Tensor& t, const std::string& record) {
    const auto* p = static_cast<const unsigned char*>(t.data_ptr());
    for (int64_t i = 0; i < t.numel(); ++i)
      if (p[i] > 1) bad(zip_.path(), "bool storage '" + record + "' holds a byte that is neither 0 nor 1");
  }

  TensorMap materialize(const std::map<std::string, Obj*>& wanted) {
    // Output is bounded relative to the input so that stride-0 views cannot blow up memory.
    const uint64_t budget = std::min<uint64_t>(zip_.file_size(), uint64_t(1) << 56) * 64 + (uint64_t(64) << 20);
    uint64_t total = 0;
    std::map<Obj*, std::vector<std::pair<std::string, Obj*>>> by_storage;
    for (const auto& [name, t] : wanted) {
      const uint64_t item = at::elementSize(t->dtype);
      if (static_cast<uint64_t>(t->numel) > (budget - total) / item)
        bad(zip_.path(), "tensors would need more than " + std::to_string(budget) + " bytes, far more than the file holds");
      total += static_cast<uint64_t>(t->numel) * item;
      by_storage[t->storage].emplace_back(name, t);
    }
    TensorMap out;
    const auto cpu = at::TensorOptions().device(at::kCPU);
    for (auto& [storage, users] : by_storage) {
      const std::string record = storage->record->name;
      const Obj* first = users.front().second;
      if (users.size() == 1 && first->offset == 0 && first->numel == storage->numel && is_contiguous(first)) {
        // Common case: the tensor is its whole storage; read it in place.
        at::Tensor t = at::empty(first->size, cpu.dtype(first->dtype));
        if (storage->numel) zip_.read_into(*storage->record, t.data_ptr());
        if (t.scalar_type() == at::kBool) check_bool(t, record);
        out.emplace(users.front().first, std::move(t));
        continue;
      }
      at::Tensor flat = at::empty({storage->numel}, cpu.dtype(storage->dtype));
      if (storage->numel) zip_.read_into(*storage->record, flat.data_ptr());
      if (flat.scalar_type() == at::kBool) check_bool(flat, record);
      for (const auto& [name, t] : users) {
        at::Tensor dst = at::empty(t->size, cpu.dtype(t->dtype));
        if (t->numel) dst.copy_(flat.as_strided(t->size, t->stride, t->offset));
        out.emplace(name, std::move(dst));
      }
    }
    return out;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Writing.
class PickleWriter {
 public:
  std::string bytes;
  void op(unsigned char c) { bytes += static_cast<char>(c); }
  void le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes += static_cast<char>((v >> (8 * i)) & 0xFF);
  }
  void str(const std::string& s) {
    op('X');
    le(s.size(), 4);
    bytes += s;
  }
  void global(const char* module, const char* name) {
    op('c');
    bytes += module;
    bytes += '\n';
    bytes += name;
    bytes += '\n';
  }
  void integer(int64_t v) {
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
  void int_tuple(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    op('t');
  }
  void empty_ordered_dict() {
    global("collections", "OrderedDict");
    op(')');
    op('R');
  }
  void tensor(const at::Tensor& t, const std::string& key) {
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(');
    str("storage");
    global("torch", storage_name(t.scalar_type()));
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
};

at::Tensor prepare(const at::Tensor& tensor, const std::string& name) {
  if (!tensor.defined()) throw Error(Error::Kind::BadInput, "tensor '" + name + "' is undefined");
  if (!storage_name(tensor.scalar_type()))
    throw Error(Error::Kind::BadInput, "tensor '" + name + "' has dtype " +
                                           std::string(c10::toString(tensor.scalar_type())) +
                                           ", which the torch archive writer does not support");
  return tensor.detach().to(at::kCPU).contiguous();
}

class ZipWriter {
 public:
  explicit ZipWriter(const std::string& path) : path_(path), f_(path, std::ios::binary | std::ios::trunc) {
    if (!f_) throw Error(Error::Kind::NotFound, "cannot create torch archive '" + path + "'");
  }

  void add(const std::string& name, const void* data, uint64_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    uint32_t state = 0xFFFFFFFFu;
    for (uint64_t done = 0; done < size;) {
      uint64_t n = std::min(size - done, kIoChunk);
      state = crc_update(state, bytes + done, n);
      done += n;
    }
    Record r{name, ~state, size, offset_};
    const bool big = size >= 0xFFFFFFFFu;
    // Local extra: an optional ZIP64 field, then "FB" padding so that the data starts 64-byte aligned.
    std::string extra;
    if (big) {
      put(extra, 0x0001, 2);
      put(extra, 16, 2);
      put(extra, size, 8);
      put(extra, size, 8);
    }
    uint64_t header_end = offset_ + 30 + name.size() + extra.size() + 4;
    uint64_t pad = (64 - header_end % 64) % 64;
    put(extra, 0x4246, 2);
    put(extra, pad, 2);
    extra.append(pad, 'Z');

    std::string h;
    put(h, 0x04034b50, 4);
    put(h, big ? 45 : 20, 2);  // version needed
    put(h, 0, 2);              // flags
    put(h, 0, 2);              // stored
    put(h, 0, 4);              // time, date
    put(h, r.crc, 4);
    put(h, big ? 0xFFFFFFFFu : size, 4);
    put(h, big ? 0xFFFFFFFFu : size, 4);
    put(h, name.size(), 2);
    put(h, extra.size(), 2);
    h += name;
    h += extra;
    write(h.data(), h.size());
    for (uint64_t done = 0; done < size;) {
      uint64_t n = std::min(size - done, kIoChunk);
      write(bytes + done, n);
      done += n;
    }
    records_.push_back(std::move(r));
  }

  void finish() {
    const uint64_t cd_offset = offset_;
    for (const auto& r : records_) {
      std::string zip64;
      if (r.size >= 0xFFFFFFFFu) {
        put(zip64, r.size, 8);
        put(zip64, r.size, 8);
      }
      if (r.offset >= 0xFFFFFFFFu) put(zip64, r.offset, 8);
      std::string h;
      put(h, 0x02014b50, 4);
      put(h, 45, 2);  // version made by
      put(h, zip64.empty() ? 20 : 45, 2);
      put(h, 0, 2);
      put(h, 0, 2);
      put(h, 0, 4);
      put(h, r.crc, 4);
      put(h, std::min<uint64_t>(r.size, 0xFFFFFFFFu), 4);
      put(h, std::min<uint64_t>(r.size, 0xFFFFFFFFu), 4);
      put(h, r.name.size(), 2);
      put(h, zip64.empty() ? 0 : zip64.size() + 4, 2);
      put(h, 0, 2);  // comment
      put(h, 0, 2);  // disk
      put(h, 0, 2);  // internal attributes
      put(h, 0, 4);  // external attributes
      put(h, std::min<uint64_t>(r.offset, 0xFFFFFFFFu), 4);
      h += r.name;
      if (!zip64.empty()) {
        put(h, 0x0001, 2);
        put(h, zip64.size(), 2);
        h += zip64;
      }
      write(h.data(), h.size());
    }
    const uint64_t cd_size = offset_ - cd_offset;
    const uint64_t eocd64 = offset_;
    const uint64_t n = records_.size();
    std::string e;
    put(e, 0x06064b50, 4);  // ZIP64 end of central directory, always written (as torch does)
    put(e, 44, 8);
    put(e, 45, 2);
    put(e, 45, 2);
    put(e, 0, 4);
    put(e, 0, 4);
    put(e, n, 8);
    put(e, n, 8);
    put(e, cd_size, 8);
    put(e, cd_offset, 8);
    put(e, 0x07064b50, 4);  // locator
    put(e, 0, 4);
    put(e, eocd64, 8);
    put(e, 1, 4);
    put(e, 0x06054b50, 4);  // end of central directory
    put(e, 0, 2);
    put(e, 0, 2);
    put(e, std::min<uint64_t>(n, 0xFFFF), 2);
    put(e, std::min<uint64_t>(n, 0xFFFF), 2);
    put(e, std::min<uint64_t>(cd_size, 0xFFFFFFFFu), 4);
    put(e, std::min<uint64_t>(cd_offset, 0xFFFFFFFFu), 4);
    put(e, 0, 2);
    write(e.data(), e.size());
    f_.flush();
    if (!f_) throw Error(Error::Kind::BadFile, "failed writing torch archive '" + path_ + "'");
  }

 private:
  struct Record {
    std::string name;
    uint32_t crc;
    uint64_t size, offset;
  };
  std::string path_;
  std::ofstream f_;
  uint64_t offset_ = 0;
  std::vector<Record> records_;

  static void put(std::string& s, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
  }
  void write(const void* p, uint64_t n) {
    f_.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
    if (!f_) throw Error(Error::Kind::BadFile, "failed writing torch archive '" + path_ + "'");
    offset_ += n;
  }
};

void write_archive(const std::string& path, const std::string& pickle, const std::vector<at::Tensor>& storages) {
  ZipWriter zip(path);
  zip.add("archive/data.pkl", pickle.data(), pickle.size());
  zip.add("archive/byteorder", "little", 6);
  for (size_t i = 0; i < storages.size(); ++i)
    zip.add("archive/data/" + std::to_string(i), storages[i].data_ptr(), storages[i].numel() * storages[i].element_size());
  zip.add("archive/version", "3\n", 2);
  zip.finish();
}

}  // namespace

TensorMap read_torch_state_dict(const std::string& path) { return ArchiveReader(path).state_dict(); }

at::Tensor read_torch_tensor(const std::string& path) { return ArchiveReader(path).tensor(); }

void write_torch_state_dict(const std::string& path, const TensorMap& tensors, bool as_state_dict) {
  require_little_endian("torch archive");
  std::vector<at::Tensor> storages;
  PickleWriter p;
  p.op(0x80);
  p.op(2);
  if (as_state_dict) p.empty_ordered_dict();
  else p.op('}');
  if (!tensors.empty()) {
    p.op('(');
    for (const auto& [name, tensor] : tensors) {
      at::Tensor t = prepare(tensor, name);
      p.str(name);
      p.tensor(t, std::to_string(storages.size()));
      storages.push_back(std::move(t));
    }
    p.op('u');
  }
  if (as_state_dict) {
    // state = {'_metadata': OrderedDict({'': {'version': 1}})}
    p.op('}');
    p.str("_metadata");
    p.empty_ordered_dict();
    p.str("");
    p.op('}');
    p.str("version");
    p.integer(1);
    p.op('s');
    p.op('s');
    p.op('s');
    p.op('b');
  }
  p.op('.');
  write_archive(path, p.bytes, storages);
}

void write_torch_tensor(const std::string& path, const at::Tensor& tensor) {
  require_little_endian("torch archive");
  at::Tensor t = prepare(tensor, "tensor");
  PickleWriter p;
  p.op(0x80);
  p.op(2);
  p.tensor(t, "0");
  p.op('.');
  write_archive(path, p.bytes, {t});
}

}  // namespace flashvsr
