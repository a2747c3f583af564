// SPDX-License-Identifier: LGPL-2.1-or-later
// Builds the seed corpora of the fuzz targets (tools/fuzz.sh runs it; output goes into the build tree).
//   fuzz-make-seeds FIXTURES_DIR OUT_DIR
// writes OUT_DIR/{safetensors,torch_archive,json,model_load}/ and OUT_DIR/model_keys.dict (the tensor names
// of a DiT checkpoint, as libFuzzer dictionary entries). Seeds come from three places:
//  - the golden fixtures (FIXTURES_DIR/*/model/*, */input.safetensors, */params.json): the files as they
//    are, plus small variants (header only, a short prefix, every tensor cut to at most 2 per dimension and
//    written again), since multi-megabyte inputs make slow fuzzing;
//  - synthetic files from the project's writers (every dtype, scalars, empty tensors, metadata, ...);
//  - the DiT of the fuzz target's generated model (fuzz_model_spec.h) in F32/BF16/F16, with deliberate
//    defects, and with other (valid) block counts and widths.
// A missing fixtures directory only drops the fixture seeds. Identical seeds are written once.
#include "engine.h"
#include "io/file_util.h"
#include "fuzz_model_spec.h"
#include "io/json.h"
#include "model_maker.h"
#include "io/safetensors.h"
#include "writers/safetensors_writer.h"
#include "io/torch_archive.h"
#include "writers/torch_archive_writer.h"
#include "weights.h"

#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <sstream>

using namespace flashvsr;
using namespace flashvsr::io;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(Error::Kind::NotFound, "cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw Error(Error::Kind::NotFound, "cannot write " + path);
}

// One corpus directory; duplicate contents are skipped.
class Corpus {
 public:
  Corpus(const std::string& root, const std::string& name) : dir_(join_path(root, name)) {
    std::string error;
    if (!remove_tree(dir_) || !make_directories(dir_, &error))
      throw Error(Error::Kind::NotFound, "cannot create " + dir_ + ": " + error);
  }
  const std::string& dir() const { return dir_; }

  void add(const std::string& name, const std::string& bytes) {
    if (!seen_.insert(bytes).second) return;
    write_all(join_path(dir_, name), bytes);
    ++count_;
    bytes_ += bytes.size();
  }
  // Seeds made by a writer that takes a path.
  void add_written(const std::string& name, const std::function<void(const std::string&)>& writer) {
    const std::string tmp = join_path(dir_, ".tmp-" + name);
    writer(tmp);
    std::string bytes = read_all(tmp);
    std::remove(tmp.c_str());
    add(name, bytes);
  }
  void report() const {
    std::cout << dir_ << ": " << count_ << " seeds, " << bytes_ << " bytes\n";
  }

 private:
  std::string dir_;
  std::set<std::string> seen_;
  size_t count_ = 0, bytes_ = 0;
};

// Every tensor cut to at most `keep` elements per dimension (names, dtypes and ranks unchanged).
TensorMap shrink(const TensorMap& in, int64_t keep = 2) {
  TensorMap out;
  for (const auto& [name, t] : in) {
    at::Tensor s = t;
    for (int64_t d = 0; d < s.dim(); ++d) s = s.narrow(d, 0, std::min<int64_t>(s.size(d), keep));
    out[name] = s.contiguous().clone();
  }
  return out;
}

// The JSON header of a safetensors file, or "" when the bytes are not shaped like one.
std::string safetensors_header(const std::string& bytes) {
  if (bytes.size() < 8) return "";
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  if (n > bytes.size() - 8) return "";
  return bytes.substr(8, n);
}

std::map<std::string, std::string> safetensors_metadata(const std::string& bytes) {
  std::map<std::string, std::string> meta;
  try {
    const Json h = parse_json(safetensors_header(bytes), "safetensors header");
    if (h.is_object() && h.contains("__metadata__") && h.at("__metadata__").is_object())
      for (const auto& [k, v] : h.at("__metadata__").items())
        if (v.is_string()) meta[k] = v.get<std::string>();
  } catch (const Error&) {
  }
  return meta;
}

at::Tensor sample(at::ScalarType dtype, std::vector<int64_t> shape, at::Generator& gen) {
  if (dtype == at::kBool) return at::randint(0, 2, shape, gen, at::kLong).to(at::kBool);
  if (at::isFloatingType(dtype)) return at::randn(shape, gen, at::kFloat).to(dtype);
  return at::randint(-100, 100, shape, gen, at::kLong).to(dtype);
}

const at::ScalarType kAllDtypes[] = {at::kDouble, at::kFloat, at::kHalf,  at::kBFloat16, at::kLong,
                                     at::kInt,    at::kShort, at::kChar,  at::kByte,     at::kBool};

// A safetensors file written by hand, so that member order and spacing differ from the project's writer.
std::string raw_safetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

void synthetic_safetensors(Corpus& c, at::Generator& gen) {
  TensorMap all;
  for (auto dt : kAllDtypes) all[std::string("t_") + c10::toString(dt)] = sample(dt, {2, 3}, gen);
  c.add_written("synthetic-all-dtypes", [&](const std::string& p) { write_safetensors(p, all); });
  c.add_written("synthetic-scalar", [&](const std::string& p) { write_safetensors(p, {{"s", sample(at::kFloat, {}, gen)}}); });
  c.add_written("synthetic-empty-tensors", [&](const std::string& p) {
    write_safetensors(p, {{"a", at::zeros({0, 3})}, {"b", at::zeros({4, 0, 2}, at::kHalf)}, {"c", sample(at::kInt, {3}, gen)}});
  });
  c.add_written("synthetic-metadata", [&](const std::string& p) {
    write_safetensors(p, {{"w", sample(at::kBFloat16, {4, 2}, gen)}},
                      {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\"\n\ttab"}, {"empty", ""}});
  });
  c.add_written("synthetic-no-tensors", [&](const std::string& p) { write_safetensors(p, {}); });
  c.add_written("synthetic-metadata-only", [&](const std::string& p) { write_safetensors(p, {}, {{"k", "v"}}); });
  c.add_written("synthetic-rank8", [&](const std::string& p) {
    write_safetensors(p, {{"r", sample(at::kFloat, {1, 2, 1, 2, 1, 2, 1, 1}, gen)}});
  });
  c.add("handmade-reordered",
        raw_safetensors(" { \"b\" : {\"data_offsets\":[0,4], \"shape\":[1], \"dtype\":\"F32\"},\n"
                        "\"a\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[4,8]} }   ",
                        std::string("\x00\x00\x80\x3f\x01\x02\x03\x04", 8)));
  c.add("handmade-bool", raw_safetensors("{\"m\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}",
                                         std::string("\x01\x00\x01", 3)));
  c.add("handmade-escaped-name",
        raw_safetensors("{\"na\\u00efve\\/\\\"x\\\"\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[0,1]},"
                        "\"__metadata__\":{}}", "\x7f"));
}

void synthetic_torch(Corpus& c, at::Generator& gen) {
  TensorMap all;
  for (auto dt : kAllDtypes) all[std::string("t_") + c10::toString(dt)] = sample(dt, {3, 2}, gen);
  c.add_written("synthetic-all-dtypes-state-dict", [&](const std::string& p) { write_torch_state_dict(p, all, true); });
  c.add_written("synthetic-all-dtypes-dict", [&](const std::string& p) { write_torch_state_dict(p, all, false); });
  c.add_written("synthetic-empty-dict", [&](const std::string& p) { write_torch_state_dict(p, {}, false); });
  c.add_written("synthetic-empty-state-dict", [&](const std::string& p) { write_torch_state_dict(p, {}, true); });
  for (auto dt : kAllDtypes)
    c.add_written(std::string("synthetic-tensor-") + c10::toString(dt),
                  [&](const std::string& p) { write_torch_tensor(p, sample(dt, {1, 4, 3}, gen)); });
  c.add_written("synthetic-tensor-scalar", [&](const std::string& p) { write_torch_tensor(p, sample(at::kFloat, {}, gen)); });
  c.add_written("synthetic-tensor-empty", [&](const std::string& p) { write_torch_tensor(p, at::zeros({2, 0, 5})); });
}

void json_seeds(Corpus& c) {
  const char* docs[] = {
      "{}", "[]", "null", "true", "false", "0", "-0", "1.5e-3", "-12345678901234567", "9223372036854775807",
      "-9223372036854775808", "9223372036854775808", "1e308", "2.2250738585072014e-308", "123456789.125E+2",
      "\"\"", "\"\\u00e9\\ud83d\\ude00\\n\\t\\\"\\\\\\/\\b\\f\\r\"", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
      "[1,[2,[3,[4,[5,[6,[7,[8]]]]]]]]", "{\"a\":{\"b\":{\"c\":[null,true,{\"d\":-1}]}}}",
      " \t\r\n{ \"k\" : [ 1 , 2 ] } \n",
      ("{\"model\":\"tiny\",\"scale\":4,\"frames\":25,\"seed\":0,\"sparse_ratio\":2.0,\"kv_ratio\":3.0,"
       "\"local_range\":11,\"color_fix\":\"adain\",\"lq_version\":\"v1.1\"}"),
  };
  int i = 0;
  for (const char* d : docs) c.add("handmade-" + std::to_string(i++), d);
}

std::string model_key_dict(const TensorMap& dit) {
  std::string out = "# Tensor names of a DiT checkpoint (generated by fuzz-make-seeds)\n";
  std::set<std::string> parts;
  for (const auto& [name, t] : dit) {
    out += "\"\\\"" + name + "\\\"\"\n";
    size_t dot = name.rfind('.');
    if (dot != std::string::npos) parts.insert(name.substr(dot));
  }
  for (const auto& p : parts) out += "\"" + p + "\"\n";
  return out;
}

void model_seeds(Corpus& c, const std::string& root) {
  const ModelTensors m = make_random_model(fuzz::fuzz_model_spec(), 2);
  for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
    TensorMap cast;
    for (const auto& [k, v] : m.dit) cast[k] = v.to(dt);
    c.add_written(std::string("dit-") + c10::toString(dt), [&](const std::string& p) { write_safetensors(p, cast); });
  }
  TensorMap base;
  for (const auto& [k, v] : m.dit) base[k] = v.to(at::kBFloat16);
  auto variant = [&](const std::string& name, const std::function<void(TensorMap&)>& edit) {
    TensorMap t = base;
    edit(t);
    c.add_written("dit-" + name, [&](const std::string& p) { write_safetensors(p, t); });
  };
  // Rejected with an error naming the tensor or the dimension.
  variant("missing-head-bias", [](TensorMap& t) { t.erase("head.head.bias"); });
  variant("transposed-ffn", [](TensorMap& t) { t["blocks.0.ffn.0.weight"] = t["blocks.0.ffn.0.weight"].t().contiguous(); });
  variant("integer-tensor", [](TensorMap& t) { t["blocks.0.self_attn.o.bias"] = t["blocks.0.self_attn.o.bias"].to(at::kInt); });
  variant("no-blocks", [](TensorMap& t) {
    for (auto it = t.begin(); it != t.end();) it = it->first.rfind("blocks.", 0) == 0 ? t.erase(it) : std::next(it);
  });
  variant("text-width-32", [](TensorMap& t) { t["text_embedding.0.weight"] = at::zeros({128, 32}, at::kBFloat16); });
  // Loaded (with a warning for the extra tensor).
  variant("extra-tensor", [](TensorMap& t) { t["unexpected.weight"] = at::ones({2, 2}, at::kBFloat16); });
  variant("two-blocks", [](TensorMap& t) {
    TensorMap copy;
    for (const auto& [k, v] : t)
      if (k.rfind("blocks.0.", 0) == 0) copy["blocks.1." + k.substr(9)] = v.clone();
    t.insert(copy.begin(), copy.end());
  });
  variant("ffn-384", [](TensorMap& t) {
    t["blocks.0.ffn.0.weight"] = at::zeros({384, 128}, at::kBFloat16);
    t["blocks.0.ffn.0.bias"] = at::zeros({384}, at::kBFloat16);
    t["blocks.0.ffn.2.weight"] = at::zeros({128, 384}, at::kBFloat16);
  });
  write_all(join_path(root, "model_keys.dict"), model_key_dict(m.dit));
}

void fixture_seeds(const std::string& fixtures, Corpus& st, Corpus& torch, Corpus& json) {
  for (const auto& name : list_directory(fixtures)) {
    const std::string fdir = join_path(fixtures, name);
    if (!is_directory(fdir)) continue;
    const std::string mdir = join_path(fdir, "model");
    if (is_regular_file(join_path(fdir, "params.json")))
      json.add("fixture-" + name + "-params.json", read_all(join_path(fdir, "params.json")));

    std::vector<std::pair<std::string, std::string>> st_files;  // (seed name, path)
    for (const char* f : {"input.safetensors", "expected.safetensors"})
      if (is_regular_file(join_path(fdir, f))) st_files.emplace_back("fixture-" + name + "-" + f, join_path(fdir, f));
    if (is_regular_file(join_path(mdir, ReleaseLayout::kDit)))
      st_files.emplace_back("fixture-" + name + "-dit", join_path(mdir, ReleaseLayout::kDit));
    for (const auto& [seed, path] : st_files) {
      const std::string bytes = read_all(path);
      const std::string header = safetensors_header(bytes);
      // The expected outputs are large and structured like the inputs: only their header goes in.
      if (seed.find("expected") == std::string::npos) st.add(seed, bytes);
      st.add(seed + "-header-only", bytes.substr(0, 8 + header.size()));
      st.add(seed + "-prefix4k", bytes.substr(0, std::min<size_t>(bytes.size(), 4096)));
      json.add(seed + "-header.json", header);
      st.add_written(seed + "-shrunk", [&, p = path](const std::string& out) {
        write_safetensors(out, shrink(read_safetensors(p)), safetensors_metadata(bytes));
      });
    }

    for (const char* f : {ReleaseLayout::kLqProj, ReleaseLayout::kDecoder}) {
      const std::string path = join_path(mdir, f);
      if (!is_regular_file(path)) continue;
      const std::string bytes = read_all(path);
      const std::string seed = "fixture-" + name + "-" + f;
      torch.add(seed, bytes);
      torch.add(seed + "-prefix64k", bytes.substr(0, std::min<size_t>(bytes.size(), 65536)));
      const TensorMap small = shrink(read_torch_state_dict(path));
      torch.add_written(seed + "-shrunk-state-dict", [&](const std::string& p) { write_torch_state_dict(p, small, true); });
      torch.add_written(seed + "-shrunk-dict", [&](const std::string& p) { write_torch_state_dict(p, small, false); });
    }
    const std::string prompt = join_path(mdir, ReleaseLayout::kPrompt);
    if (is_regular_file(prompt)) torch.add("fixture-" + name + "-prompt", read_all(prompt));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: fuzz-make-seeds FIXTURES_DIR OUT_DIR\n";
    return 2;
  }
  const std::string fixtures = argv[1], out = argv[2];
  try {
    c10::InferenceMode guard;
    std::string error;
    if (!make_directories(out, &error)) throw Error(Error::Kind::NotFound, "cannot create " + out + ": " + error);
    Corpus st(out, "safetensors"), torch(out, "torch_archive"), json(out, "json"), model(out, "model_load");
    auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
    synthetic_safetensors(st, gen);
    synthetic_torch(torch, gen);
    json_seeds(json);
    model_seeds(model, out);
    if (is_directory(fixtures))
      fixture_seeds(fixtures, st, torch, json);
    else
      std::cerr << "fuzz-make-seeds: no fixtures at " << fixtures << ", only synthetic seeds\n";
    // Every safetensors header is a JSON seed too.
    for (const auto& name : list_directory(st.dir())) {
      const std::string h = safetensors_header(read_all(join_path(st.dir(), name)));
      if (!h.empty()) json.add(name + "-header.json", h);
    }
    for (const Corpus* c : {&st, &torch, &json, &model}) c->report();
  } catch (const std::exception& e) {
    std::cerr << "fuzz-make-seeds: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
