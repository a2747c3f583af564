// SPDX-License-Identifier: LGPL-2.1-or-later
// libFuzzer target: the strict JSON parser (model/json.h).
// Input: JSON text. Properties checked beyond "no crash":
//  - accessors of the wrong type throw flashvsr::Error, never anything else;
//  - objects list each key once, in `keys()`, matching the map;
//  - a parsed document, written out again (by the serializer below) and re-parsed, is the same document.
#include "fuzz_support.h"
#include "io/json.h"

#include <cmath>
#include <cstdio>

using namespace flashvsr;
using namespace flashvsr::io;

namespace {

// Calls every accessor that does not match the value's type; each must throw flashvsr::Error.
void check_wrong_type_accessors(const JsonValue& v) {
  using T = JsonValue::Type;
  auto must_throw = [](const char* accessor, auto&& fn) {
    try {
      fn();
    } catch (const Error&) {
      return;
    } catch (const std::exception& e) {
      fuzz::unexpected_exception(accessor, &e);
    }
    fuzz::finding(std::string("JsonValue::") + accessor + " did not throw on a value of another type");
  };
  if (v.type() != T::Bool) must_throw("as_bool", [&] { v.as_bool(); });
  if (v.type() != T::Number) must_throw("as_number", [&] { v.as_number(); });
  if (v.type() != T::Number) must_throw("as_int", [&] { v.as_int(); });
  if (v.type() != T::String) must_throw("as_string", [&] { v.as_string(); });
  if (v.type() != T::Array) must_throw("as_array", [&] { v.as_array(); });
  if (v.type() != T::Object) must_throw("as_object", [&] { v.as_object(); });
  if (v.type() != T::Object && v.has("x")) fuzz::finding("has() is true on a non-object");
}

void append_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

// Serializes `v`; returns false when it holds a number that JSON cannot spell (not finite).
bool serialize(const JsonValue& v, std::string& out) {
  using T = JsonValue::Type;
  switch (v.type()) {
    case T::Null: out += "null"; return true;
    case T::Bool: out += v.as_bool() ? "true" : "false"; return true;
    case T::Number: {
      int64_t i = 0;
      bool is_int = fuzz::accepts("as_int", [&] { i = v.as_int(); });
      if (is_int) {
        out += std::to_string(i);
        return true;
      }
      double d = v.as_number();
      if (!std::isfinite(d)) return false;
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", d);
      out += buf;
      return true;
    }
    case T::String: append_string(out, v.as_string()); return true;
    case T::Array: {
      out += '[';
      bool first = true;
      for (const auto& e : v.as_array()) {
        if (!first) out += ',';
        first = false;
        if (!serialize(e, out)) return false;
      }
      out += ']';
      return true;
    }
    case T::Object: {
      const auto& members = v.as_object();
      if (v.keys().size() != members.size()) fuzz::finding("keys() and the object map differ in size");
      out += '{';
      bool first = true;
      for (const auto& k : v.keys()) {
        if (!v.has(k)) fuzz::finding("a key listed in keys() is absent from the object");
        if (!first) out += ',';
        first = false;
        append_string(out, k);
        out += ':';
        if (!serialize(v.at(k), out)) return false;
      }
      out += '}';
      return true;
    }
  }
  fuzz::finding("JsonValue with an unknown type");
}

// Structural equality; numbers compare by value, and integers that were exact stay exact.
bool same(const JsonValue& a, const JsonValue& b) {
  using T = JsonValue::Type;
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case T::Null: return true;
    case T::Bool: return a.as_bool() == b.as_bool();
    case T::Number: {
      if (a.as_number() != b.as_number()) return false;
      int64_t ia = 0, ib = 0;
      if (fuzz::accepts("as_int", [&] { ia = a.as_int(); }))
        return fuzz::accepts("as_int", [&] { ib = b.as_int(); }) && ia == ib;
      return true;
    }
    case T::String: return a.as_string() == b.as_string();
    case T::Array: {
      const auto &x = a.as_array(), &y = b.as_array();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!same(x[i], y[i])) return false;
      return true;
    }
    case T::Object: {
      if (a.keys() != b.keys()) return false;
      for (const auto& k : a.keys())
        if (!same(a.at(k), b.at(k))) return false;
      return true;
    }
  }
  return false;
}

void walk(const JsonValue& v) {
  check_wrong_type_accessors(v);
  if (v.is_array())
    for (const auto& e : v.as_array()) walk(e);
  if (v.is_object())
    for (const auto& k : v.keys()) walk(v.at(k));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  JsonValue doc;
  if (!fuzz::accepts("JsonValue::parse", [&] { doc = JsonValue::parse(text); })) return 0;
  walk(doc);
  std::string again;
  if (!serialize(doc, again)) return 0;
  JsonValue doc2;
  if (!fuzz::accepts("JsonValue::parse (round trip)", [&] { doc2 = JsonValue::parse(again); }))
    fuzz::finding("the parser rejected its own document written out again: " + again.substr(0, 200));
  if (!same(doc, doc2)) fuzz::finding("round trip changed the document: " + again.substr(0, 200));
  return 0;
}
