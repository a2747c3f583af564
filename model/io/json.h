// SPDX-License-Identifier: LGPL-2.1-or-later
// A small strict JSON reader (RFC 8259) for safetensors headers and fixture parameter files.
// Bounded: nesting depth and input size are limited, every error names the byte offset.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace flashvsr::io {

class JsonValue {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  // Accessors throw flashvsr::Error(BadFile) naming `what` when the type does not match.
  bool as_bool(const std::string& what = "value") const;
  double as_number(const std::string& what = "value") const;
  // The number as an exact integer; throws if it has a fraction or is out of int64 range.
  int64_t as_int(const std::string& what = "value") const;
  const std::string& as_string(const std::string& what = "value") const;
  const std::vector<JsonValue>& as_array(const std::string& what = "value") const;
  // Keys in document order are kept in `keys()`; duplicate keys are an error.
  const std::map<std::string, JsonValue>& as_object(const std::string& what = "value") const;
  const std::vector<std::string>& keys() const { return keys_; }

  bool has(const std::string& key) const;
  // Object member; throws naming the key when absent.
  const JsonValue& at(const std::string& key) const;

  static JsonValue parse(const std::string& text, size_t max_depth = 64);

 private:
  friend class JsonParser;
  Type type_ = Type::Null;
  bool bool_ = false;
  double number_ = 0.0;
  bool number_is_int_ = false;
  int64_t int_ = 0;
  std::string string_;
  std::vector<JsonValue> array_;
  std::map<std::string, JsonValue> object_;
  std::vector<std::string> keys_;
};

}  // namespace flashvsr::io
