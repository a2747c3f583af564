// SPDX-License-Identifier: LGPL-2.1-or-later
#include "io/json.h"

#include "error.h"
#include "io/file_util.h"

#include <limits>
#include <set>
#include <vector>

namespace flashvsr::io {

namespace {

constexpr uint64_t kMaxJsonFileBytes = uint64_t(64) << 20;

[[noreturn]] void bad(const std::string& what, const std::string& message) {
  throw Error(Error::Kind::BadFile, what + ": " + message);
}

// "a string", "an object", "a number with a fraction or exponent", ...
std::string kind_of(const Json& v) {
  if (v.is_number_float()) return "a number with a fraction or exponent";
  const std::string name = v.type_name();
  return (name == "object" || name == "array" ? "an " : "a ") + name;
}

// nlohmann's message without its "[json.exception.parse_error.101] " tag.
std::string reason(const nlohmann::json::exception& e) {
  const std::string m = e.what();
  const auto tag_end = m.find("] ");
  return tag_end == std::string::npos ? m : m.substr(tag_end + 2);
}

}  // namespace

Json parse_json(const std::string& text, const std::string& source, size_t max_depth) {
  // The keys seen so far in each object being parsed, innermost last (arrays hold no keys, so only
  // objects push a set; a key event always belongs to the innermost open object).
  std::vector<std::set<std::string>> open_objects;
  auto check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        // `depth` counts the containers around this one.
        if (static_cast<size_t>(depth) >= max_depth)
          bad(source, "JSON nested deeper than " + std::to_string(max_depth) + " levels");
        if (event == Json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end: open_objects.pop_back(); break;
      case Json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!open_objects.back().insert(key).second) bad(source, "duplicate JSON object key " + parsed.dump());
        break;
      }
      default: break;
    }
    return true;
  };
  // nlohmann's lexer takes a NUL byte for the end of the input ("{}\0junk" would parse); JSON text has
  // none (outside strings it is no token, inside one a control character that must be escaped).
  if (const size_t nul = text.find('\0'); nul != std::string::npos)
    bad(source, "not valid JSON: a NUL byte at byte " + std::to_string(nul));
  try {
    return Json::parse(text, check, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    bad(source, "not valid JSON: " + reason(e));
  }
}

Json read_json_file(const std::string& path, size_t max_depth) {
  ReadOnlyFile file(path, "JSON file");
  if (file.size() > kMaxJsonFileBytes)
    bad(path, "JSON file of " + std::to_string(file.size()) + " bytes exceeds the limit of " +
                  std::to_string(kMaxJsonFileBytes));
  std::string text(file.size(), '\0');
  file.read(0, text.data(), text.size());
  return parse_json(text, path, max_depth);
}

template <>
int64_t json_as<int64_t>(const Json& v, const std::string& what) {
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad(what, "integer " + v.dump() + " is out of the int64 range");
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  bad(what, "expected an integer, found " + kind_of(v));
}

template <>
double json_as<double>(const Json& v, const std::string& what) {
  if (!v.is_number()) bad(what, "expected a number, found " + kind_of(v));
  return v.get<double>();
}

template <>
std::string json_as<std::string>(const Json& v, const std::string& what) {
  if (!v.is_string()) bad(what, "expected a string, found " + kind_of(v));
  return v.get<std::string>();
}

template <>
bool json_as<bool>(const Json& v, const std::string& what) {
  if (!v.is_boolean()) bad(what, "expected true or false, found " + kind_of(v));
  return v.get<bool>();
}

template <typename T>
T json_get(const Json& object, const std::string& key, const std::string& source) {
  const std::string what = source + ": \"" + key + "\"";
  if (!object.is_object()) bad(what, "the document is " + kind_of(object) + ", not an object");
  const auto it = object.find(key);
  if (it == object.end()) bad(what, "missing");
  return json_as<T>(*it, what);
}

template int64_t json_get<int64_t>(const Json&, const std::string&, const std::string&);
template double json_get<double>(const Json&, const std::string&, const std::string&);
template std::string json_get<std::string>(const Json&, const std::string&, const std::string&);
template bool json_get<bool>(const Json&, const std::string&, const std::string&);

}  // namespace flashvsr::io
