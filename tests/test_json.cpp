// SPDX-License-Identifier: LGPL-2.1-or-later
// The strict JSON reader: valid documents, every kind of malformed input, limits and error messages.
#include "error.h"
#include "io/json.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

using flashvsr::Error;
using flashvsr::io::JsonValue;

namespace {

// The message of the BadFile error that parsing `text` throws ("" when it parses).
std::string parse_error(const std::string& text, size_t max_depth = 64) {
  try {
    JsonValue::parse(text, max_depth);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadFile) << text;
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Json, ParsesScalarsArraysAndObjects) {
  JsonValue v = JsonValue::parse(R"({"a": [1, -2.5, true, false, null, "x"], "b": {"c": {}}, "d": []})");
  ASSERT_TRUE(v.is_object());
  const auto& a = v.at("a").as_array();
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(a[0].as_int(), 1);
  EXPECT_DOUBLE_EQ(a[1].as_number(), -2.5);
  EXPECT_TRUE(a[2].as_bool());
  EXPECT_FALSE(a[3].as_bool());
  EXPECT_TRUE(a[4].is_null());
  EXPECT_EQ(a[5].as_string(), "x");
  EXPECT_TRUE(v.at("b").at("c").is_object());
  EXPECT_TRUE(v.at("b").at("c").as_object().empty());
  EXPECT_TRUE(v.at("d").as_array().empty());
  EXPECT_TRUE(v.has("a"));
  EXPECT_FALSE(v.has("z"));
  EXPECT_FALSE(a[0].has("a"));
  EXPECT_EQ(JsonValue::parse("7").as_int(), 7);
  EXPECT_EQ(JsonValue::parse("\"s\"").as_string(), "s");
  EXPECT_TRUE(JsonValue::parse("null").is_null());
}

TEST(Json, AcceptsWhitespaceAroundTokens) {
  JsonValue v = JsonValue::parse(" \t\r\n{ \"k\" \n:\t[ 1 ,\r2 ] } \n");
  EXPECT_EQ(v.at("k").as_array()[1].as_int(), 2);
}

TEST(Json, KeepsExactInt64ForIntegerLiterals) {
  EXPECT_EQ(JsonValue::parse("9223372036854775807").as_int(), INT64_MAX);
  EXPECT_EQ(JsonValue::parse("-9223372036854775808").as_int(), INT64_MIN);
  // 2^53 + 1 is not representable as a double, but must come back exactly.
  EXPECT_EQ(JsonValue::parse("9007199254740993").as_int(), 9007199254740993LL);
  EXPECT_EQ(JsonValue::parse("-0").as_int(), 0);
  EXPECT_DOUBLE_EQ(JsonValue::parse("9007199254740993").as_number(), 9007199254740992.0);
}

TEST(Json, IntegerBeyondInt64IsANumberButNotAnInt) {
  JsonValue v = JsonValue::parse("9223372036854775808");
  EXPECT_TRUE(v.is_number());
  EXPECT_DOUBLE_EQ(v.as_number(), 9223372036854775808.0);
  EXPECT_THROW(v.as_int(), Error);
  EXPECT_THROW(JsonValue::parse("-9223372036854775809").as_int(), Error);
  EXPECT_THROW(JsonValue::parse("1e300").as_int(), Error);
}

TEST(Json, AsIntAcceptsIntegralFloatsAndRejectsFractions) {
  EXPECT_EQ(JsonValue::parse("1e3").as_int(), 1000);
  EXPECT_EQ(JsonValue::parse("-2.0").as_int(), -2);
  EXPECT_EQ(JsonValue::parse("2.5E1").as_int(), 25);
  EXPECT_EQ(JsonValue::parse("0.0e5").as_int(), 0);
  EXPECT_EQ(JsonValue::parse("12500e-2").as_int(), 125);
  // Exact even beyond the 53-bit precision of a double.
  EXPECT_EQ(JsonValue::parse("9007199254740993.0").as_int(), 9007199254740993LL);
  EXPECT_EQ(JsonValue::parse("-9223372036854775808.0").as_int(), INT64_MIN);
  EXPECT_EQ(JsonValue::parse("9.223372036854775807e18").as_int(), INT64_MAX);
  EXPECT_THROW(JsonValue::parse("9.223372036854775808e18").as_int(), Error);
  EXPECT_THROW(JsonValue::parse("1e19").as_int(), Error);
  EXPECT_THROW(JsonValue::parse("2.5").as_int(), Error);
  EXPECT_THROW(JsonValue::parse("1e-1").as_int(), Error);
  EXPECT_THROW(JsonValue::parse("1e-400").as_int(), Error);
  EXPECT_THROW(JsonValue::parse("1.0000000000000000000001").as_int(), Error);
}

TEST(Json, ParsesNumberForms) {
  EXPECT_DOUBLE_EQ(JsonValue::parse("0.5").as_number(), 0.5);
  EXPECT_DOUBLE_EQ(JsonValue::parse("-0.125e+2").as_number(), -12.5);
  EXPECT_DOUBLE_EQ(JsonValue::parse("1E-2").as_number(), 0.01);
  EXPECT_DOUBLE_EQ(JsonValue::parse("1.7976931348623157e308").as_number(), 1.7976931348623157e308);
  // Underflow is representable as zero; overflow is not representable at all.
  EXPECT_DOUBLE_EQ(JsonValue::parse("1e-400").as_number(), 0.0);
  EXPECT_DOUBLE_EQ(JsonValue::parse("0.0000001e-400").as_number(), 0.0);
  EXPECT_NE(parse_error("1e400"), "");
  EXPECT_NE(parse_error("-123.4e99999999999999999999"), "");
}

TEST(Json, DecodesAllStringEscapes) {
  EXPECT_EQ(JsonValue::parse(R"("\"\\\/\b\f\n\r\t")").as_string(), "\"\\/\b\f\n\r\t");
  EXPECT_EQ(JsonValue::parse(R"("\u0041\u00e9\u20AC")").as_string(), "A\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(JsonValue::parse(R"("a\u0000b")").as_string(), std::string("a\0b", 3));
  // Raw UTF-8 passes through unchanged.
  EXPECT_EQ(JsonValue::parse("\"\xC3\xA9\xF0\x9F\x98\x80\"").as_string(), "\xC3\xA9\xF0\x9F\x98\x80");
}

TEST(Json, DecodesSurrogatePairsToUtf8) {
  EXPECT_EQ(JsonValue::parse(R"("\ud83d\ude00")").as_string(), "\xF0\x9F\x98\x80");
  EXPECT_EQ(JsonValue::parse(R"("\uD800\uDC00")").as_string(), "\xF0\x90\x80\x80");
  EXPECT_EQ(JsonValue::parse(R"("\uDBFF\uDFFF")").as_string(), "\xF4\x8F\xBF\xBF");
}

TEST(Json, RejectsLoneOrMisorderedSurrogates) {
  for (const char* s : {R"("\ud83d")", R"("\ud83dx")", R"("\ude00")", R"("\ud83d\u0041")", R"("\ud83d\ud83d")",
                        R"("\ud83d\")"})
    EXPECT_NE(parse_error(s), "") << s;
}

TEST(Json, RejectsInvalidUtf8InStrings) {
  for (const std::string s : {"\"\xFF\"", "\"\xC3\"", "\"\xC0\xAF\"", "\"\xE0\x80\xAF\"", "\"\xED\xA0\x80\"",
                              "\"\xF4\x90\x80\x80\"", "\"\x80\"", "\"\xC3\x41\""})
    EXPECT_NE(parse_error(s), "") << s;
}

TEST(Json, KeysKeepDocumentOrder) {
  JsonValue v = JsonValue::parse(R"({"zeta": 1, "alpha": 2, "mid": 3, "": 4})");
  EXPECT_EQ(v.keys(), (std::vector<std::string>{"zeta", "alpha", "mid", ""}));
  EXPECT_EQ(v.as_object().size(), 4u);
  EXPECT_EQ(v.at("").as_int(), 4);
}

TEST(Json, RejectsDuplicateKeys) {
  std::string msg = parse_error(R"({"a": 1, "b": 2, "a": 3})");
  EXPECT_NE(msg.find("duplicate"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"a\""), std::string::npos) << msg;
  EXPECT_NE(parse_error(R"({"x": {"k": 1, "k": 1}})"), "");
  // Keys equal after unescaping are duplicates too.
  EXPECT_NE(parse_error(R"({"A": 1, "\u0041": 2})"), "");
}

TEST(Json, RejectsMalformedDocuments) {
  const std::vector<std::string> bad = {
      "",         " ",         "{",          "}",          "[",          "]",          "[1,]",        "[,1]",
      "{\"a\":1,}", "{,}",      "{\"a\"}",     "{\"a\" 1}",   "{\"a\":}",    "{1:2}",      "{a:1}",       "[1 2]",
      "01",       "-01",       "1.",         ".5",         "+1",         "-",          "1e",          "1e+",
      "1.e3",     "0x10",      "tru",        "truex",      "nul",        "falsy",      "True",        "NaN",
      "Infinity", "-Infinity", "'a'",        "\"a",        "\"\\x\"",    "\"\\u12\"",  "\"\\u12G4\"", "\"\t\"",
      "\"\n\"",   "\"\x01\"",  "1 2",        "[] []",      "{}x",        "\xEF\xBB\xBF{}", "/*c*/1",  "[1]//",
      "\"\\",     "\"\\u",     "[\"a\":1]",  "{\"a\":1 \"b\":2}", std::string("1\0", 2), "\x00",
  };
  for (const auto& s : bad) EXPECT_NE(parse_error(s), "") << "accepted: " << s;
}

TEST(Json, ErrorMessagesNameTheByteOffset) {
  std::string msg = parse_error("[1, 2, x]");
  EXPECT_NE(msg.find("byte 7"), std::string::npos) << msg;
  msg = parse_error("{\"a\": 1,\n \"b\" 2}");
  EXPECT_NE(msg.find("byte 14"), std::string::npos) << msg;
  msg = parse_error("[1, 2");
  EXPECT_NE(msg.find("byte 5"), std::string::npos) << msg;
}

TEST(Json, EnforcesTheDepthLimit) {
  auto nested = [](size_t n) { return std::string(n, '[') + std::string(n, ']'); };
  EXPECT_EQ(parse_error(nested(64)), "");
  std::string msg = parse_error(nested(65));
  EXPECT_NE(msg.find("nesting"), std::string::npos) << msg;
  EXPECT_EQ(parse_error(nested(3), 3), "");
  EXPECT_NE(parse_error(nested(4), 3), "");
  EXPECT_NE(parse_error("{\"a\":{\"b\":{\"c\":1}}}", 2), "");
  // A huge requested depth is still capped, so this cannot exhaust the stack.
  EXPECT_NE(parse_error(nested(200000), size_t(1) << 40), "");
  EXPECT_NE(parse_error(std::string(1 << 20, '[')), "");
}

TEST(Json, AccessorsThrowNamingWhatWasExpected) {
  JsonValue v = JsonValue::parse(R"({"dtype": 5, "shape": "x"})");
  try {
    v.at("dtype").as_string("tensor 'w' dtype");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadFile);
    std::string m = e.what();
    EXPECT_NE(m.find("tensor 'w' dtype"), std::string::npos) << m;
    EXPECT_NE(m.find("string"), std::string::npos) << m;
    EXPECT_NE(m.find("number"), std::string::npos) << m;
  }
  try {
    v.at("data_offsets");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data_offsets"), std::string::npos) << e.what();
  }
  EXPECT_THROW(v.at("shape").as_array(), Error);
  EXPECT_THROW(v.at("shape").as_object(), Error);
  EXPECT_THROW(v.at("shape").as_bool(), Error);
  EXPECT_THROW(v.at("shape").as_number(), Error);
  EXPECT_THROW(v.at("shape").as_int(), Error);
  EXPECT_THROW(v.at("dtype").at("x"), Error);
  EXPECT_THROW(v.as_array(), Error);
}

TEST(Json, RandomMutationsNeverCrash) {
  const std::string base =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
      R"("s":"\u00e9\ud83d\ude00\n","n":[-1.5e3,0,true,false,null,{"x":[[[]]]}]})";
  ASSERT_EQ(parse_error(base), "");
  const std::string alphabet = "{}[]\":,\\/-+.eE0123456789tfnulrsaxu \n\t\x01\x7f\xc3\xa9\xff";
  std::mt19937 rng(1234);
  int failures = 0, successes = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = base;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      size_t pos = rng() % (s.size() + 1);
      switch (rng() % 3) {
        case 0:
          if (pos < s.size()) s[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1: s.insert(s.begin() + pos, alphabet[rng() % alphabet.size()]); break;
        case 2:
          if (pos < s.size()) s.erase(pos, 1 + rng() % 8);
          break;
      }
    }
    (parse_error(s).empty() ? successes : failures)++;
  }
  // Both outcomes occur; what matters is that nothing but flashvsr::Error escaped.
  EXPECT_GT(failures, 0);
  EXPECT_GT(successes, 0);
}
