// SPDX-License-Identifier: LGPL-2.1-or-later
// libFuzzer target: the strict JSON parsing of model/io/json.h (nlohmann/json plus unique keys and a
// nesting bound), the path every safetensors header and parameter file takes.
// Input: JSON text. Properties checked beyond "no crash" (nlohmann's own parser, run without our
// callback, is the reference):
//  - parse_json rejects only with flashvsr::Error, and only what nlohmann rejects, what holds a NUL byte
//    (which nlohmann's lexer takes for the end of the input), what is nested deeper than kMaxJsonDepth
//    or what repeats a key in an object;
//  - what it accepts equals nlohmann's document, and written out (dump) parses again to the same document.
#include "fuzz_support.h"
#include "io/json.h"

#include <utility>
#include <vector>

using namespace flashvsr;
using namespace flashvsr::io;

namespace {

// Nesting depth (a scalar is 0) and member count of all objects, without recursion: documents that
// nlohmann accepts may be nested far deeper than a call stack.
std::pair<size_t, size_t> depth_and_members(const Json& root) {
  size_t depth = 0, members = 0;
  std::vector<std::pair<const Json*, size_t>> todo{{&root, 0}};
  while (!todo.empty()) {
    const auto [v, d] = todo.back();
    todo.pop_back();
    if (!v->is_structured()) continue;
    depth = std::max(depth, d + 1);
    if (v->is_object()) members += v->size();
    for (const auto& child : *v) todo.emplace_back(&child, d + 1);
  }
  return {depth, members};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  Json doc;
  const bool ours = fuzz::accepts("parse_json", [&] { doc = parse_json(text, "input"); });

  // nlohmann alone, counting the keys it reads (a repeated key overwrites a member, so the document then
  // holds fewer members than keys were read).
  size_t keys_read = 0;
  const Json plain = Json::parse(
      text,
      [&](int, Json::parse_event_t event, Json&) {
        if (event == Json::parse_event_t::key) ++keys_read;
        return true;
      },
      /*allow_exceptions=*/false);
  const bool nlohmann_accepts = !plain.is_discarded();

  const bool has_nul = text.find('\0') != std::string::npos;
  if (ours && !nlohmann_accepts) fuzz::finding("parse_json accepted a document nlohmann rejects");
  if (ours && has_nul) fuzz::finding("parse_json accepted a document holding a NUL byte");
  if (!ours) {
    if (!nlohmann_accepts || has_nul) return 0;
    const auto [depth, members] = depth_and_members(plain);
    if (depth <= kMaxJsonDepth && members == keys_read)
      fuzz::finding("parse_json rejected a document without duplicate keys within the depth bound");
    return 0;
  }
  const auto [depth, members] = depth_and_members(doc);
  if (depth > kMaxJsonDepth) fuzz::finding("parse_json accepted a document deeper than the bound");
  if (members != keys_read) fuzz::finding("parse_json accepted a document with a repeated key");
  if (doc != plain) fuzz::finding("parse_json's document differs from nlohmann's");

  std::string again;
  try {
    again = doc.dump();
  } catch (const nlohmann::json::exception& e) {
    fuzz::finding(std::string("an accepted document cannot be written out: ") + e.what());
  }
  Json doc2;
  if (!fuzz::accepts("parse_json (round trip)", [&] { doc2 = parse_json(again, "round trip"); }))
    fuzz::finding("parse_json rejected an accepted document written out again: " + again.substr(0, 200));
  if (doc2 != doc) fuzz::finding("round trip changed the document: " + again.substr(0, 200));
  return 0;
}
