// SPDX-License-Identifier: LGPL-2.1-or-later
// Strict recursive-descent JSON reader (RFC 8259) with bounded depth, input size and value count.
#include "io/json.h"

#include "error.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

namespace flashvsr::io {

namespace {

// Hard bounds whatever the caller asks for: the recursion must not exhaust the stack, and a small
// input must not expand into an enormous tree (each JsonValue is a few hundred bytes).
constexpr size_t kHardMaxDepth = 512;
constexpr size_t kMaxInputBytes = size_t(256) << 20;
constexpr size_t kMaxValues = size_t(1) << 21;

const char* type_name(JsonValue::Type t) {
  switch (t) {
    case JsonValue::Type::Null: return "null";
    case JsonValue::Type::Bool: return "a boolean";
    case JsonValue::Type::Number: return "a number";
    case JsonValue::Type::String: return "a string";
    case JsonValue::Type::Array: return "an array";
    case JsonValue::Type::Object: return "an object";
  }
  return "?";
}

[[noreturn]] void type_error(const std::string& what, const char* expected, JsonValue::Type found) {
  throw Error(Error::Kind::BadFile, what + ": expected " + expected + ", found " + type_name(found));
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

class JsonParser {
 public:
  JsonParser(const std::string& text, size_t max_depth)
      : s_(text), max_depth_(std::min(max_depth, kHardMaxDepth)) {}

  JsonValue run() {
    if (s_.size() > kMaxInputBytes)
      throw Error(Error::Kind::BadFile, "JSON text of " + std::to_string(s_.size()) + " bytes exceeds the limit of " +
                                            std::to_string(kMaxInputBytes) + " bytes");
    JsonValue v;
    skip_ws();
    parse_value(v, 0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected trailing characters after the JSON value");
    return v;
  }

 private:
  const std::string& s_;
  size_t max_depth_;
  size_t pos_ = 0;
  size_t values_ = 0;

  [[noreturn]] void fail(const std::string& msg) const { fail_at(pos_, msg); }
  [[noreturn]] void fail_at(size_t at, const std::string& msg) const {
    throw Error(Error::Kind::BadFile, "invalid JSON at byte " + std::to_string(at) + ": " + msg);
  }

  bool at_end() const { return pos_ >= s_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(s_[pos_]); }

  void skip_ws() {
    while (!at_end()) {
      char c = s_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void expect_literal(const char* lit) {
    size_t n = std::strlen(lit);
    if (s_.compare(pos_, n, lit) != 0) fail(std::string("invalid literal, expected '") + lit + "'");
    pos_ += n;
  }

  void parse_value(JsonValue& v, size_t depth) {
    if (++values_ > kMaxValues) fail("too many values (limit " + std::to_string(kMaxValues) + ")");
    if (at_end()) fail("unexpected end of input, expected a value");
    switch (peek()) {
      case '{': parse_object(v, depth + 1); return;
      case '[': parse_array(v, depth + 1); return;
      case '"':
        v.type_ = JsonValue::Type::String;
        parse_string(v.string_);
        return;
      case 't':
        expect_literal("true");
        v.type_ = JsonValue::Type::Bool;
        v.bool_ = true;
        return;
      case 'f':
        expect_literal("false");
        v.type_ = JsonValue::Type::Bool;
        v.bool_ = false;
        return;
      case 'n':
        expect_literal("null");
        v.type_ = JsonValue::Type::Null;
        return;
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) {
          parse_number(v);
          return;
        }
        fail(std::string("unexpected character '") + describe(peek()) + "'");
    }
  }

  static std::string describe(unsigned char c) {
    if (c >= 0x20 && c < 0x7F) return std::string(1, static_cast<char>(c));
    static const char* hex = "0123456789abcdef";
    return std::string("\\x") + hex[c >> 4] + hex[c & 15];
  }

  void check_depth(size_t depth) {
    if (depth > max_depth_) fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
  }

  void parse_object(JsonValue& v, size_t depth) {
    check_depth(depth);
    v.type_ = JsonValue::Type::Object;
    ++pos_;  // '{'
    skip_ws();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      if (at_end() || peek() != '"') fail("expected a string key");
      size_t key_pos = pos_;
      std::string key;
      parse_string(key);
      skip_ws();
      if (at_end() || peek() != ':') fail("expected ':' after an object key");
      ++pos_;
      skip_ws();
      if (v.object_.count(key)) fail_at(key_pos, "duplicate key \"" + key + "\"");
      JsonValue member;
      parse_value(member, depth);
      v.keys_.push_back(key);
      v.object_.emplace(std::move(key), std::move(member));
      skip_ws();
      if (at_end()) fail("unexpected end of input inside an object");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return;
      }
      fail("expected ',' or '}' in an object");
    }
  }

  void parse_array(JsonValue& v, size_t depth) {
    check_depth(depth);
    v.type_ = JsonValue::Type::Array;
    ++pos_;  // '['
    skip_ws();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      v.array_.emplace_back();
      parse_value(v.array_.back(), depth);
      skip_ws();
      if (at_end()) fail("unexpected end of input inside an array");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return;
      }
      fail("expected ',' or ']' in an array");
    }
  }

  uint32_t parse_hex4() {
    if (s_.size() - pos_ < 4) fail("truncated \\u escape");
    uint32_t cp = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_ + i];
      uint32_t d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else fail("invalid hex digit in \\u escape");
      cp = cp * 16 + d;
    }
    pos_ += 4;
    return cp;
  }

  // Validates one raw UTF-8 sequence starting at pos_ and copies it.
  void copy_utf8(std::string& out) {
    unsigned char c = peek();
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      fail("invalid UTF-8 byte");
    }
    if (s_.size() - pos_ < len) fail("truncated UTF-8 sequence");
    for (size_t i = 1; i < len; ++i) {
      unsigned char cc = static_cast<unsigned char>(s_[pos_ + i]);
      if ((cc & 0xC0) != 0x80) fail("invalid UTF-8 continuation byte");
      cp = (cp << 6) | (cc & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len]) fail("overlong UTF-8 sequence");
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) fail("invalid UTF-8 code point");
    out.append(s_, pos_, len);
    pos_ += len;
  }

  void parse_string(std::string& out) {
    ++pos_;  // opening quote
    for (;;) {
      if (at_end()) fail("unterminated string");
      unsigned char c = peek();
      if (c == '"') {
        ++pos_;
        return;
      }
      if (c < 0x20) fail("unescaped control character in a string");
      if (c != '\\') {
        copy_utf8(out);
        continue;
      }
      ++pos_;
      if (at_end()) fail("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("unpaired low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.compare(pos_, 2, "\\u") != 0) fail("high surrogate not followed by a \\u low surrogate");
            pos_ += 2;
            uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: --pos_; fail("invalid escape character '" + describe(static_cast<unsigned char>(e)) + "'");
      }
    }
  }

  // Power of ten of the leading significant digit of a valid number literal (saturated), e.g. 123e4 -> 6.
  static int64_t decimal_exponent(const char* b, const char* e) {
    const char* p = b;
    if (*p == '-') ++p;
    int64_t lead = 0;
    bool found = false;
    int64_t int_digits = 0;
    for (; p < e && *p >= '0' && *p <= '9'; ++p) {
      if (found || *p != '0') {
        found = true;
        ++int_digits;
      }
    }
    if (found) lead = int_digits - 1;
    if (p < e && *p == '.') {
      ++p;
      int64_t zeros = 0;
      for (; p < e && *p >= '0' && *p <= '9'; ++p) {
        if (!found && *p == '0') ++zeros;
        else if (!found) {
          found = true;
          lead = -zeros - 1;
        }
      }
    }
    if (!found) return std::numeric_limits<int64_t>::min();  // zero
    int64_t exp = 0;
    bool neg = false;
    if (p < e && (*p == 'e' || *p == 'E')) {
      ++p;
      if (*p == '+' || *p == '-') neg = *p++ == '-';
      for (; p < e; ++p) exp = std::min<int64_t>(exp * 10 + (*p - '0'), int64_t(1) << 40);
    }
    return lead + (neg ? -exp : exp);
  }

  // Whether a literal with a fraction or exponent (e.g. 2.50e1) is exactly an int64; then stores it.
  static bool exact_integer(const char* b, const char* e, int64_t* out) {
    const char* p = b;
    bool neg = *p == '-';
    if (neg) ++p;
    std::string digits;
    int64_t exp10 = 0;
    for (; p < e && *p >= '0' && *p <= '9'; ++p) digits += *p;
    if (p < e && *p == '.')
      for (++p; p < e && *p >= '0' && *p <= '9'; ++p) {
        digits += *p;
        --exp10;
      }
    if (p < e && (*p == 'e' || *p == 'E')) {
      ++p;
      bool eneg = false;
      if (*p == '+' || *p == '-') eneg = *p++ == '-';
      int64_t x = 0;
      for (; p < e; ++p) x = std::min<int64_t>(x * 10 + (*p - '0'), int64_t(1) << 40);
      exp10 += eneg ? -x : x;
    }
    size_t first = digits.find_first_not_of('0');
    if (first == std::string::npos) {
      *out = 0;
      return true;
    }
    digits.erase(0, first);
    while (digits.back() == '0') {
      digits.pop_back();
      ++exp10;
    }
    if (exp10 < 0 || exp10 > 19 || digits.size() > 19) return false;
    // Accumulate as a negative number so that INT64_MIN is reachable.
    int64_t acc = 0;
    const int64_t lim = std::numeric_limits<int64_t>::min();
    for (size_t i = 0; i < digits.size() + static_cast<size_t>(exp10); ++i) {
      int d = i < digits.size() ? digits[i] - '0' : 0;
      if (acc < (lim + d) / 10) return false;
      acc = acc * 10 - d;
    }
    if (!neg) {
      if (acc == lim) return false;
      acc = -acc;
    }
    *out = acc;
    return true;
  }

  void parse_number(JsonValue& v) {
    size_t start = pos_;
    auto digit = [&] { return !at_end() && peek() >= '0' && peek() <= '9'; };
    if (peek() == '-') ++pos_;
    if (!digit()) fail("expected a digit");
    if (peek() == '0') {
      ++pos_;
      if (digit()) fail("leading zeros are not allowed");
    } else {
      while (digit()) ++pos_;
    }
    bool integer = true;
    if (!at_end() && peek() == '.') {
      integer = false;
      ++pos_;
      if (!digit()) fail("expected a digit after the decimal point");
      while (digit()) ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      integer = false;
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (!digit()) fail("expected a digit in the exponent");
      while (digit()) ++pos_;
    }
    const char* b = s_.data() + start;
    const char* e = s_.data() + pos_;
    v.type_ = JsonValue::Type::Number;
    if (integer) {
      int64_t i = 0;
      auto r = std::from_chars(b, e, i);
      if (r.ec == std::errc() && r.ptr == e) {
        v.number_is_int_ = true;
        v.int_ = i;
      }
    } else {
      v.number_is_int_ = exact_integer(b, e, &v.int_);
    }
    double d = 0.0;
    auto r = std::from_chars(b, e, d);  // locale-independent
    if (r.ec == std::errc::result_out_of_range) {
      // Underflow to zero is harmless; overflow to infinity is not representable.
      if (decimal_exponent(b, e) > 0) fail_at(start, "number out of range");
      d = 0.0;
    } else if (r.ec != std::errc() || r.ptr != e) {
      fail_at(start, "malformed number");
    }
    v.number_ = d;
  }
};

bool JsonValue::as_bool(const std::string& what) const {
  if (type_ != Type::Bool) type_error(what, "a boolean", type_);
  return bool_;
}

double JsonValue::as_number(const std::string& what) const {
  if (type_ != Type::Number) type_error(what, "a number", type_);
  return number_;
}

int64_t JsonValue::as_int(const std::string& what) const {
  if (type_ != Type::Number) type_error(what, "an integer", type_);
  if (!number_is_int_) {
    bool integral = std::floor(number_) == number_;
    throw Error(Error::Kind::BadFile, what + (integral ? ": integer is out of the 64-bit range"
                                                       : ": expected an integer, found a fraction"));
  }
  return int_;
}

const std::string& JsonValue::as_string(const std::string& what) const {
  if (type_ != Type::String) type_error(what, "a string", type_);
  return string_;
}

const std::vector<JsonValue>& JsonValue::as_array(const std::string& what) const {
  if (type_ != Type::Array) type_error(what, "an array", type_);
  return array_;
}

const std::map<std::string, JsonValue>& JsonValue::as_object(const std::string& what) const {
  if (type_ != Type::Object) type_error(what, "an object", type_);
  return object_;
}

bool JsonValue::has(const std::string& key) const { return type_ == Type::Object && object_.count(key) != 0; }

const JsonValue& JsonValue::at(const std::string& key) const {
  if (type_ != Type::Object) type_error("value holding key \"" + key + "\"", "an object", type_);
  auto it = object_.find(key);
  if (it == object_.end()) throw Error(Error::Kind::BadFile, "missing key \"" + key + "\"");
  return it->second;
}

JsonValue JsonValue::parse(const std::string& text, size_t max_depth) { return JsonParser(text, max_depth).run(); }

}  // namespace flashvsr::io
