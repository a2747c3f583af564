// SPDX-License-Identifier: LGPL-2.1-or-later
#include "cli.h"

#include "error.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace flashvsr::cli {

StreamOptions stream_settings(const Args& args) {
  StreamOptions so;
  so.scale = args.num("scale", so.scale);
  so.lq_version = parse_lq_version(args.str("model-version", "1.1"));
  so.sparse_ratio = args.num("sparse-ratio", so.sparse_ratio);
  so.kv_ratio = args.num("kv-ratio", so.kv_ratio);
  so.local_range = args.integer("local-range", so.local_range);
  so.color_fix = parse_color_fix(args.str("color-fix", "adain"));
  so.seed = static_cast<uint64_t>(args.integer("seed", static_cast<int64_t>(so.seed)));
  so.attention = parse_attention_backend(args.str("attention", "auto"));
  so.decoder_group = args.integer("decoder-group", so.decoder_group);
  return so;
}

TileOptions tile_settings(const Args& args) {
  return {args.integer("tile-width", 0), args.integer("tile-height", 0), args.integer("tile-overlap", 128),
          parse_tile_colour(args.str("tile-colour", "per-tile"))};
}

Args::Args(int argc, char** argv, const std::vector<std::string>& with_value, const std::vector<std::string>& flags) {
  auto contains = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const auto eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (contains(flags, name)) {
      values_[name] = "1";
    } else if (contains(with_value, name)) {
      if (eq == std::string::npos) {
        if (i + 1 >= argc) throw Error(Error::Kind::BadSettings, "option --" + name + " needs a value");
        value = argv[++i];
      }
      values_[name] = value;
    } else {
      throw Error(Error::Kind::BadSettings, "unknown option --" + name);
    }
  }
}

std::string Args::str(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

double Args::num(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  try {
    size_t used = 0;
    double v = std::stod(it->second, &used);
    if (used == it->second.size()) return v;
  } catch (const std::exception&) {
  }
  throw Error(Error::Kind::BadSettings, "option --" + name + ": '" + it->second + "' is not a number");
}

int64_t Args::integer(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  try {
    size_t used = 0;
    long long v = std::stoll(it->second, &used);
    if (used == it->second.size()) return v;
  } catch (const std::exception&) {
  }
  throw Error(Error::Kind::BadSettings, "option --" + name + ": '" + it->second + "' is not an integer");
}

at::Tensor reference_frames_u8(const std::map<std::string, at::Tensor>& expected, const std::string& path) {
  if (auto it = expected.find("frames_u8"); it != expected.end()) return it->second;
  auto it = expected.find("frames");
  if (it == expected.end()) throw Error(Error::Kind::BadFile, path + ": missing tensor 'frames_u8' or 'frames'");
  const at::Tensor f = it->second.to(at::kFloat);  // [3, N, H, W]
  return ((f + 1) * 127.5).round().clamp(0, 255).to(at::kByte).permute({1, 2, 3, 0}).contiguous();
}

std::vector<double> psnr_per_frame(const at::Tensor& a, const at::Tensor& b) {
  auto diff = a.to(at::kDouble) - b.to(at::kDouble);
  auto mse = diff.pow(2).flatten(1).mean(1);
  std::vector<double> out;
  for (int64_t i = 0; i < mse.size(0); ++i) {
    const double m = mse[i].item<double>();
    out.push_back(m == 0.0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(255.0 * 255.0 / m));
  }
  return out;
}

std::string format_db(double db) {
  if (std::isinf(db)) return "inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", db);
  return buf;
}

}  // namespace flashvsr::cli
