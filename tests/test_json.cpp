// SPDX-License-Identifier: LGPL-2.1-or-later
// The strictness we add to nlohmann/json (io/json.h): duplicate keys refused, nesting bounded, every
// error a BadFile naming the source; the typed accessors' integer rules and messages; and that the
// malformed documents our readers must refuse are refused.
#include "error.h"
#include "io/json.h"
#include "test_support.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

using flashvsr::Error;
using flashvsr::io::Json;
using flashvsr::io::json_as;
using flashvsr::io::json_get;
using flashvsr::io::parse_json;
namespace t = flashvsr::test;

namespace {

// The message of the BadFile error that parsing `text` throws ("" when it parses).
std::string parse_error(const std::string& text, size_t max_depth = flashvsr::io::kMaxJsonDepth) {
  try {
    parse_json(text, "doc.json", max_depth);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadFile) << text;
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The message of the BadFile error `fn` throws ("" when it does not throw).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadFile) << e.what();
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Json, ParsesObjectsArraysAndScalars) {
  const Json v = parse_json(R"({"a": [1, -2.5, true, false, null, "x"], "b": {"c": {}}, "d": []})", "doc");
  ASSERT_TRUE(v.is_object());
  EXPECT_EQ(v.size(), 3u);
  const Json& a = v.at("a");
  ASSERT_EQ(a.size(), 6u);
  EXPECT_TRUE(a[0].is_number_integer());
  EXPECT_EQ(a[0].get<int64_t>(), 1);
  EXPECT_TRUE(a[1].is_number_float());
  EXPECT_DOUBLE_EQ(a[1].get<double>(), -2.5);
  EXPECT_EQ(a[2], true);
  EXPECT_EQ(a[3], false);
  EXPECT_TRUE(a[4].is_null());
  EXPECT_EQ(a[5], "x");
  EXPECT_TRUE(v.at("b").at("c").is_object());
  EXPECT_TRUE(v.at("d").is_array());
  // Escapes, surrogate pairs and raw UTF-8 come out as UTF-8.
  EXPECT_EQ(parse_json(R"("\u0041\u00e9\ud83d\ude00\n")", "doc"), "A\xC3\xA9\xF0\x9F\x98\x80\n");
  EXPECT_EQ(parse_json(" \t\r\n[ 1 ,\r2 ] \n", "doc").size(), 2u);
}

TEST(Json, RefusesDuplicateKeysNamingThem) {
  std::string msg = parse_error(R"({"a": 1, "b": 2, "a": 3})");
  EXPECT_TRUE(contains(msg, "duplicate")) << msg;
  EXPECT_TRUE(contains(msg, "\"a\"")) << msg;
  EXPECT_TRUE(contains(msg, "doc.json")) << msg;
  // In nested objects, objects inside arrays, and keys equal only after unescaping.
  EXPECT_NE(parse_error(R"({"x": {"k": 1, "k": 1}})"), "");
  EXPECT_NE(parse_error(R"([{"k": 1}, {"j": [], "j": {}}])"), "");
  EXPECT_NE(parse_error(R"({"A": 1, "\u0041": 2})"), "");
  // The same key in sibling or nested objects is no duplicate.
  EXPECT_EQ(parse_error(R"({"k": {"k": 1}, "j": {"k": 2}, "l": [{"k": 3}, {"k": 4}]})"), "");
}

TEST(Json, BoundsTheNestingDepth) {
  auto arrays = [](size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  EXPECT_EQ(parse_error(arrays(64)), "");
  const std::string msg = parse_error(arrays(65));
  EXPECT_TRUE(contains(msg, "nested deeper than 64")) << msg;
  EXPECT_EQ(parse_error(arrays(3), 3), "");
  EXPECT_NE(parse_error(arrays(4), 3), "");
  // Objects count as levels too, mixed with arrays.
  EXPECT_EQ(parse_error(R"({"a":[{"b":1}]})", 3), "");
  EXPECT_NE(parse_error(R"({"a":[{"b":[]}]})", 3), "");
  // Refused before it is built: a very deep document (unclosed, too) cannot exhaust the stack.
  EXPECT_NE(parse_error(arrays(200000)), "");
  EXPECT_NE(parse_error(std::string(1 << 20, '[')), "");
}

TEST(Json, SyntaxErrorsNameTheSourceAndWhere) {
  // 'x' is the 8th byte of the first line.
  std::string msg = parse_error("[1, 2, x]");
  EXPECT_EQ(msg.rfind("doc.json: not valid JSON", 0), 0u) << msg;
  EXPECT_TRUE(contains(msg, "line 1, column 8")) << msg;
  // The second line's 6th byte is the '2' where a ':' belongs.
  msg = parse_error("{\"a\": 1,\n \"b\" 2}");
  EXPECT_TRUE(contains(msg, "line 2, column 6")) << msg;
  EXPECT_FALSE(contains(msg, "json.exception")) << msg;
  // A NUL byte ends nothing: it is an error where it stands.
  msg = parse_error(std::string("{}\0\0", 4));
  EXPECT_TRUE(contains(msg, "NUL byte at byte 2")) << msg;
}

TEST(Json, RefusesMalformedDocuments) {
  const std::vector<std::string> bad = {
      "",          " ",           "{",           "}",          "[1,]",       "[,1]",          "{\"a\":1,}",
      "{\"a\"}",   "{\"a\" 1}",   "{1:2}",       "{a:1}",      "[1 2]",      "01",            "-01",
      "1.",        ".5",          "+1",          "1e",         "0x10",       "tru",           "True",
      "NaN",       "Infinity",    "-Infinity",   "'a'",        "\"a",        "\"\\x\"",       "\"\\u12G4\"",
      "\"\t\"",    "\"\n\"",      "\"\x01\"",    "1 2",        "[] []",      "{}x",           "/*c*/1",
      "[1]//",     "1e400",       std::string("1\0", 2),      std::string("\0", 1),     std::string("\"\0\"", 3),
      // invalid UTF-8 and lone surrogates
      "\"\xFF\"",  "\"\xC3\"",    "\"\xC0\xAF\"", "\"\xED\xA0\x80\"", "\"\xF4\x90\x80\x80\"",
      R"("\ud83d")", R"("\ude00")", R"("\ud83d\u0041")",
  };
  for (const auto& s : bad) EXPECT_NE(parse_error(s), "") << "accepted: " << s;
}

TEST(Json, IntegersAreExactAndInRange) {
  EXPECT_EQ(json_as<int64_t>(parse_json("9223372036854775807", "doc"), "n"), INT64_MAX);
  EXPECT_EQ(json_as<int64_t>(parse_json("-9223372036854775808", "doc"), "n"), INT64_MIN);
  EXPECT_EQ(json_as<int64_t>(parse_json("9007199254740993", "doc"), "n"), 9007199254740993LL);  // not via double
  EXPECT_EQ(json_as<int64_t>(parse_json("-0", "doc"), "n"), 0);
  std::string msg = error_of([] { json_as<int64_t>(parse_json("9223372036854775808", "doc"), "tensor 'w' shape"); });
  EXPECT_TRUE(contains(msg, "tensor 'w' shape")) << msg;
  EXPECT_TRUE(contains(msg, "range")) << msg;
  // Fractions and exponents are no integers (as the safetensors format reads shapes and offsets).
  for (const char* s : {"2.5", "2.0", "1e3", "-9223372036854775809", "18446744073709551616"}) {
    msg = error_of([&] { json_as<int64_t>(parse_json(s, "doc"), "n"); });
    EXPECT_NE(msg, "") << s;
  }
  EXPECT_TRUE(contains(error_of([] { json_as<int64_t>(parse_json("\"7\"", "doc"), "n"); }), "found a string"));
  EXPECT_DOUBLE_EQ(json_as<double>(parse_json("7", "doc"), "n"), 7.0);
  EXPECT_DOUBLE_EQ(json_as<double>(parse_json("-0.125e+2", "doc"), "n"), -12.5);
}

TEST(Json, MembersOfTheWrongTypeOrMissingNameSourceAndKey) {
  const Json p = parse_json(R"({"width": 1408, "scale": 4, "name": "x", "flag": true, "bad": [1]})", "params.json");
  EXPECT_EQ(json_get<int64_t>(p, "width", "params.json"), 1408);
  EXPECT_DOUBLE_EQ(json_get<double>(p, "scale", "params.json"), 4.0);
  EXPECT_EQ(json_get<std::string>(p, "name", "params.json"), "x");
  EXPECT_TRUE(json_get<bool>(p, "flag", "params.json"));
  std::string msg = error_of([&] { json_get<int64_t>(p, "height", "params.json"); });
  EXPECT_TRUE(contains(msg, "params.json: \"height\": missing")) << msg;
  msg = error_of([&] { json_get<std::string>(p, "bad", "params.json"); });
  EXPECT_TRUE(contains(msg, "params.json: \"bad\"")) << msg;
  EXPECT_TRUE(contains(msg, "expected a string, found an array")) << msg;
  EXPECT_NE(error_of([&] { json_get<bool>(p, "width", "params.json"); }), "");
  EXPECT_NE(error_of([&] { json_get<double>(p, "name", "params.json"); }), "");
  EXPECT_NE(error_of([] { json_get<int64_t>(parse_json("[]", "doc"), "k", "doc"); }), "");
}

TEST(Json, FilesAreNamedInErrors) {
  const std::string dir = t::scratch_dir("json_files");
  t::write_file(dir + "/ok.json", R"({"k": [1, 2]})");
  EXPECT_EQ(flashvsr::io::read_json_file(dir + "/ok.json").at("k").size(), 2u);
  t::write_file(dir + "/dup.json", R"({"k": 1, "k": 2})");
  const std::string msg = error_of([&] { flashvsr::io::read_json_file(dir + "/dup.json"); });
  EXPECT_EQ(msg.rfind(dir + "/dup.json: duplicate", 0), 0u) << msg;
  try {
    flashvsr::io::read_json_file(dir + "/absent.json");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::NotFound);
    EXPECT_TRUE(contains(e.what(), dir + "/absent.json")) << e.what();
  }
}
