// SPDX-License-Identifier: LGPL-2.1-or-later
// JSON documents (RFC 8259) for the files the engine and its tools read: safetensors headers, fixture
// parameters, benchmark baselines. nlohmann/json parses (no comments, nothing after the value, invalid
// UTF-8 and lone surrogates refused); on top of it every object key must be unique (a duplicate would
// make two readers see two different files) and nesting is bounded. Errors are Error(BadFile) naming the
// source; the typed accessors below turn a missing member or a value of the wrong type into one too.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

namespace flashvsr::io {

using Json = nlohmann::json;

constexpr size_t kMaxJsonDepth = 64;

// Errors: "<source>: not valid JSON: <where and why>", "<source>: duplicate JSON object key \"k\"",
// "<source>: JSON nested deeper than <max_depth> levels".
Json parse_json(const std::string& text, const std::string& source, size_t max_depth = kMaxJsonDepth);
// The file read whole and parsed, named by its path; Error(NotFound) when it cannot be opened.
Json read_json_file(const std::string& path, size_t max_depth = kMaxJsonDepth);

// `v` as T, `what` naming it in errors ("<what>: expected an integer, found a string"):
//   int64_t      a JSON integer within int64 (not 2.0, not 1e3: as the safetensors format reads them)
//   double       any number
//   std::string  a string
//   bool         true or false
template <typename T>
T json_as(const Json& v, const std::string& what);
// Member `key` of the object `object` as T; Error(BadFile) "<source>: \"<key>\": ..." when it is absent,
// of another type, or `object` is no object.
template <typename T>
T json_get(const Json& object, const std::string& key, const std::string& source);

template <> int64_t json_as<int64_t>(const Json& v, const std::string& what);
template <> double json_as<double>(const Json& v, const std::string& what);
template <> std::string json_as<std::string>(const Json& v, const std::string& what);
template <> bool json_as<bool>(const Json& v, const std::string& what);
extern template int64_t json_get<int64_t>(const Json&, const std::string&, const std::string&);
extern template double json_get<double>(const Json&, const std::string&, const std::string&);
extern template std::string json_get<std::string>(const Json&, const std::string&, const std::string&);
extern template bool json_get<bool>(const Json&, const std::string&, const std::string&);

}  // namespace flashvsr::io
