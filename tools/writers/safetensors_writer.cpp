// SPDX-License-Identifier: LGPL-2.1-or-later
#include "writers/safetensors_writer.h"

#include "error.h"
#include "io/file_util.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <algorithm>
#include <fstream>
#include <vector>

namespace flashvsr::io {

namespace {

constexpr uint64_t kWriteChunk = uint64_t(64) << 20;

// `s` as a JSON string (escaped by nlohmann/json); Error(BadInput) naming `what` when it is not UTF-8.
std::string quoted(const std::string& s, const std::string& what) {
  try {
    return Json(s).dump(-1, ' ', false, Json::error_handler_t::strict);
  } catch (const nlohmann::json::exception&) {
    throw Error(Error::Kind::BadInput, what + " is not valid UTF-8, which a safetensors header must be");
  }
}

}  // namespace

void write_safetensors(const std::string& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata) {
  require_little_endian("safetensors");
  std::vector<at::Tensor> data;
  std::string json = "{";
  bool first = true;
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      if (!first) json += ',';
      first = false;
      json += quoted(k, "metadata key '" + k + "'") + ':' + quoted(v, "metadata value of '" + k + "'");
    }
    json += '}';
    first = false;
  }
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") throw Error(Error::Kind::BadInput, "a tensor may not be named __metadata__");
    if (!tensor.defined()) throw Error(Error::Kind::BadInput, "tensor '" + name + "' is undefined");
    const char* dt = safetensors_dtype_name(tensor.scalar_type());
    if (!dt)
      throw Error(Error::Kind::BadInput, "tensor '" + name + "' has dtype " +
                                             std::string(c10::toString(tensor.scalar_type())) +
                                             ", which safetensors writing does not support");
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t nbytes = t.numel() * t.element_size();
    if (!first) json += ',';
    first = false;
    json += quoted(name, "tensor name '" + name + "'");
    json += ":{\"dtype\":\"";
    json += dt;
    json += "\",\"shape\":[";
    for (int64_t i = 0; i < t.dim(); ++i) {
      if (i) json += ',';
      json += std::to_string(t.size(i));
    }
    json += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
    data.push_back(std::move(t));
  }
  json += '}';
  while (json.size() % 8 != 0) json += ' ';

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error(Error::Kind::NotFound, "cannot create safetensors file '" + path + "'");
  unsigned char len_bytes[8];
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = static_cast<unsigned char>(n >> (8 * i));
  f.write(reinterpret_cast<const char*>(len_bytes), 8);
  f.write(json.data(), static_cast<std::streamsize>(json.size()));
  for (const auto& t : data) {
    const char* p = static_cast<const char*>(t.data_ptr());
    uint64_t left = t.numel() * t.element_size();
    while (left > 0) {
      const uint64_t chunk = std::min(left, kWriteChunk);
      f.write(p, static_cast<std::streamsize>(chunk));
      p += chunk;
      left -= chunk;
    }
  }
  f.flush();
  if (!f) throw Error(Error::Kind::BadFile, "failed writing safetensors file '" + path + "'");
}

}  // namespace flashvsr::io
