// SPDX-License-Identifier: LGPL-2.1-or-later
// Strict weight binding and model loading: configs inferred from shapes, and every defect named.
#include "engine.h"
#include "io/file_util.h"
#include "io/json.h"
#include "model_maker.h"
#include "test_support.h"
#include "io/torch_archive.h"
#include "writers/torch_archive_writer.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <cstdio>


using namespace flashvsr;
using namespace flashvsr::io;

namespace {

std::string error_of(const std::function<void()>& f, Error::Kind* kind = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& text, const std::string& needle) {
  EXPECT_NE(text.find(needle), std::string::npos) << "'" << needle << "' not in: " << text;
}

}  // namespace

TEST(WeightFile, TakeChecksPresenceShapeAndDtypeNamingFileAndKey) {
  TensorMap m;
  m["a.weight"] = at::ones({2, 3});
  m["b"] = at::ones({4}, at::kLong);
  WeightFile f("dir/file.safetensors", m);
  auto t = f.take("a.weight", {2, 3}, at::kCPU, at::kBFloat16);
  EXPECT_EQ(t.scalar_type(), at::kBFloat16);
  std::string e = error_of([&] { f.take("a.weight", {3, 2}, at::kCPU, at::kFloat); });
  expect_contains(e, "dir/file.safetensors");
  expect_contains(e, "a.weight");
  expect_contains(e, "[2, 3]");
  expect_contains(e, "expected [3, 2]");
  e = error_of([&] { f.take("missing.bias", {7}, at::kCPU, at::kFloat); });
  expect_contains(e, "missing.bias");
  expect_contains(e, "[7]");
  e = error_of([&] { f.take("b", {4}, at::kCPU, at::kFloat); });
  expect_contains(e, "dtype");
}

TEST(WeightFile, UnusedListsWhatWasNeverTaken) {
  TensorMap m;
  m["x"] = at::ones({1});
  m["y"] = at::ones({1});
  WeightFile f("f", m);
  f.take("x", {1}, at::kCPU, at::kFloat);
  EXPECT_EQ(f.unused(), std::vector<std::string>{"y"});
  EXPECT_EQ(f.count_indexed("z.", ".w"), 0);
}

TEST(WeightFile, ATakenTensorIsAnOwnedCopyAndTheFileKeepsOnlyItsShape) {
  const at::Tensor source = at::arange(6, at::kFloat).view({2, 3}), same = at::ones({2});
  WeightFile f("dir/f.safetensors", TensorMap{{"w", source}, {"same", same}});
  const at::Tensor w = f.take("w", {2, 3}, at::kCPU, at::kBFloat16);
  EXPECT_TRUE(at::equal(w, source.to(at::kBFloat16)));
  // The file holds the source no more (only this test does), but still knows its shape and that it was used.
  EXPECT_EQ(source.use_count(), 1);
  EXPECT_EQ(f.shape("w"), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(f.unused() == std::vector<std::string>{"same"});
  Error::Kind kind{};
  const std::string e = error_of([&] { f.take("w", {2, 3}, at::kCPU, at::kFloat); }, &kind);
  EXPECT_EQ(kind, Error::Kind::Internal);
  expect_contains(e, "'w'");
  // A tensor that needs no conversion is copied too: a model never holds the reader's views of a file
  // (io/safetensors.h: a file rewritten under them raises SIGBUS), and it is released and taken once as well.
  const at::Tensor a = f.take("same", {2}, at::kCPU, at::kFloat);
  EXPECT_FALSE(a.is_alias_of(same));
  EXPECT_TRUE(at::equal(a, same));
  EXPECT_EQ(same.use_count(), 1);
  error_of([&] { f.take("same", {2}, at::kCPU, at::kFloat); }, &kind);
  EXPECT_EQ(kind, Error::Kind::Internal);
}

TEST(WeightFile, CountIndexedCountsConsecutiveKeys) {
  TensorMap m;
  for (int i : {0, 1, 2, 4}) m["blocks." + std::to_string(i) + ".w"] = at::ones({1});
  WeightFile f("f", m);
  EXPECT_EQ(f.count_indexed("blocks.", ".w"), 3);
}

TEST(ModelLoad, InfersEveryDimensionFromShapes) {
  c10::InferenceMode guard;
  ModelSpec spec = ModelSpec::tiny();
  spec.layers = 3;
  spec.ffn_dim = 384;
  spec.decoder_channels = {24, 16, 8, 8};
  spec.lq_hidden1 = 20;
  spec.lq_hidden2 = 12;
  spec.context_len = 5;
  auto m = Model::from_tensors(make_random_model(spec, 1), LoadOptions{});
  const auto& c = m->config();
  EXPECT_EQ(c.dit.dim, 256);
  EXPECT_EQ(c.dit.heads, 2);
  EXPECT_EQ(c.dit.ffn_dim, 384);
  EXPECT_EQ(c.dit.layers, 3);
  EXPECT_EQ(c.dit.text_dim, 64);
  EXPECT_EQ(c.dit.freq_dim, 256);
  EXPECT_EQ(c.lq_proj.hidden1, 20);
  EXPECT_EQ(c.lq_proj.hidden2, 12);
  EXPECT_EQ(c.lq_proj.num_linear, 1);
  EXPECT_EQ(c.decoder.channels, (std::array<int64_t, 4>{24, 16, 8, 8}));
  EXPECT_EQ(c.context_len, 5);
  EXPECT_FALSE(c.describe().empty());
}

// One case per fixture; a fixture of a variant the engine does not implement skips, named.
class ModelLoadFixtures : public test::FixtureTest {};

TEST_P(ModelLoadFixtures, FixtureModelsMatchTheirParams) {
  c10::InferenceMode guard;
  const std::string& dir = fixture();
  const Json p = read_json_file(dir + "/params.json");
  auto m = Model::load(dir + "/model", LoadOptions{});
  const auto& c = m->config();
  EXPECT_EQ(c.dit.dim, p.at("dim").get<int64_t>());
  EXPECT_EQ(c.dit.heads, p.at("num_heads").get<int64_t>());
  EXPECT_EQ(c.dit.ffn_dim, p.at("ffn_dim").get<int64_t>());
  EXPECT_EQ(c.dit.layers, p.at("num_layers").get<int64_t>());
  EXPECT_EQ(c.dit.text_dim, p.at("text_dim").get<int64_t>());
  EXPECT_EQ(c.context_len, p.at("context_len").get<int64_t>());
  EXPECT_EQ(c.lq_proj.hidden1, p.at("lq_hidden")[0].get<int64_t>());
  EXPECT_EQ(c.lq_proj.hidden2, p.at("lq_hidden")[1].get<int64_t>());
  if (test::fixture_variant(dir) == "full") {
    EXPECT_EQ(c.variant, Variant::Full);
    EXPECT_EQ(c.vae_decoder.dim, p.at("vae_dim").get<int64_t>());
    EXPECT_EQ(c.vae_decoder.z_dim, p.at("vae_z_dim").get<int64_t>());
  } else {
    EXPECT_EQ(c.variant, Variant::Tiny);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(c.decoder.channels[i], p.at("tc_channels")[i].get<int64_t>());
  }
}

FLASHVSR_FIXTURE_TESTS(ModelLoadFixtures);

TEST(ModelLoad, WrittenDirectoryLoadsLikeTheTensorsItCameFrom) {
  c10::InferenceMode guard;
  auto tensors = make_random_model(ModelSpec::tiny(), 3);
  const std::string dir = test::scratch_dir("weights-roundtrip");
  write_model_dir(dir, tensors);
  auto a = Model::load(dir, LoadOptions{});
  auto b = Model::from_tensors(tensors, LoadOptions{});
  EXPECT_TRUE(at::equal(a->dit().blocks[1].ffn2_w, b->dit().blocks[1].ffn2_w));
  EXPECT_TRUE(at::equal(a->decoder().mem[4].w1, b->decoder().mem[4].w1));
  EXPECT_TRUE(at::equal(a->lq_proj().conv2_w, b->lq_proj().conv2_w));
  EXPECT_TRUE(at::equal(a->dit_constants().blocks[0].cross_k, b->dit_constants().blocks[0].cross_k));
}

TEST(ModelLoad, ComputeDtypeIsApplied) {
  c10::InferenceMode guard;
  LoadOptions o;
  o.dtype = at::kBFloat16;
  auto m = Model::from_tensors(make_random_model(ModelSpec::tiny(), 3), o);
  EXPECT_EQ(m->dit().blocks[0].q_w.scalar_type(), at::kBFloat16);
  EXPECT_EQ(m->decoder().out_w.scalar_type(), at::kBFloat16);
}

TEST(ModelLoad, MissingDirectoryOrFileIsNotFoundNamingThePath) {
  c10::InferenceMode guard;
  Error::Kind kind{};
  std::string e = error_of([] { Model::load("/nonexistent/flashvsr-model", LoadOptions{}); }, &kind);
  EXPECT_EQ(kind, Error::Kind::NotFound);
  expect_contains(e, "/nonexistent/flashvsr-model");

  const std::string dir = test::scratch_dir("weights-missing-file");
  write_model_dir(dir, make_random_model(ModelSpec::tiny(), 3));
  remove_tree(join_path(dir, ReleaseLayout::kDecoder));
  e = error_of([&] { Model::load(dir, LoadOptions{}); }, &kind);
  EXPECT_EQ(kind, Error::Kind::NotFound);
  expect_contains(e, ReleaseLayout::kDecoder);
}

TEST(ModelLoad, WrongShapeNamesFileTensorExpectedAndFound) {
  c10::InferenceMode guard;
  auto t = make_random_model(ModelSpec::tiny(), 3);
  t.dit["blocks.1.self_attn.k.weight"] = at::zeros({256, 128});
  Error::Kind kind{};
  std::string e = error_of([&] { Model::from_tensors(t, LoadOptions{}, "mdl"); }, &kind);
  EXPECT_EQ(kind, Error::Kind::BadFile);
  expect_contains(e, ReleaseLayout::kDit);
  expect_contains(e, "blocks.1.self_attn.k.weight");
  expect_contains(e, "[256, 128]");
  expect_contains(e, "expected [256, 256]");
}

TEST(ModelLoad, MissingTensorIsNamed) {
  c10::InferenceMode guard;
  auto t = make_random_model(ModelSpec::tiny(), 3);
  t.decoder.erase("decoder.18.conv.2.bias");
  std::string e = error_of([&] { Model::from_tensors(t, LoadOptions{}); });
  expect_contains(e, ReleaseLayout::kDecoder);
  expect_contains(e, "decoder.18.conv.2.bias");
}

TEST(ModelLoad, InconsistentFilesAreRejected) {
  c10::InferenceMode guard;
  auto t = make_random_model(ModelSpec::tiny(), 3);
  t.lq_proj["linear_layers.0.weight"] = at::zeros({384, 48});
  t.lq_proj["linear_layers.0.bias"] = at::zeros({384});
  std::string e = error_of([&] { Model::from_tensors(t, LoadOptions{}); });
  expect_contains(e, ReleaseLayout::kLqProj);
  expect_contains(e, "expected 256, found 384");

  auto t2 = make_random_model(ModelSpec::tiny(), 3);
  t2.prompt = at::zeros({1, 16, 32});
  e = error_of([&] { Model::from_tensors(t2, LoadOptions{}); });
  expect_contains(e, ReleaseLayout::kPrompt);
  expect_contains(e, "[1, 16, 32]");
}

TEST(ModelLoad, UnknownExtraTensorsAreAWarningNotAnError) {
  c10::InferenceMode guard;
  auto t = make_random_model(ModelSpec::tiny(), 3);
  t.dit["vace_blocks.0.weight"] = at::zeros({2});
  std::vector<std::string> warnings;
  LoadOptions o;
  o.log = [&](LogLevel level, const std::string& m) {
    if (level == LogLevel::Warning) warnings.push_back(m);
  };
  Model::from_tensors(t, o);
  ASSERT_EQ(warnings.size(), 1u);
  expect_contains(warnings[0], "vace_blocks.0.weight");
}

TEST(ModelLoad, CorruptFileIsAnErrorNamingIt) {
  c10::InferenceMode guard;
  const std::string dir = test::scratch_dir("weights-corrupt");
  write_model_dir(dir, make_random_model(ModelSpec::tiny(), 3));
  const std::string path = join_path(dir, ReleaseLayout::kLqProj);
  const std::string bytes = test::read_file(path);
  test::write_file(path, bytes.substr(0, bytes.size() / 2));
  std::string e = error_of([&] { Model::load(dir, LoadOptions{}); });
  expect_contains(e, ReleaseLayout::kLqProj);
}

TEST(ModelLoad, UnavailableCudaDeviceIsADeviceError) {
  if (at::hasCUDA()) GTEST_SKIP() << "CUDA is available here";
  LoadOptions o;
  o.device = at::Device(at::kCUDA, 0);
  Error::Kind kind{};
  std::string e = error_of([&] { Model::from_tensors(make_random_model(ModelSpec::tiny(), 3), o); }, &kind);
  EXPECT_EQ(kind, Error::Kind::Device);
  expect_contains(e, "cuda:0");
}

TEST(ModelLoad, DeviceAndDtypeStringsParse) {
  EXPECT_EQ(parse_device("cpu"), at::Device(at::kCPU));
  EXPECT_EQ(parse_device("cuda"), at::Device(at::kCUDA, 0));
  EXPECT_EQ(parse_device("cuda:3"), at::Device(at::kCUDA, 3));
  EXPECT_THROW(parse_device("gpu"), Error);
  EXPECT_THROW(parse_device("cuda:"), Error);
  EXPECT_THROW(parse_device("cuda:x"), Error);
  EXPECT_EQ(parse_dtype("bf16"), at::kBFloat16);
  EXPECT_EQ(parse_dtype("fp16"), at::kHalf);
  EXPECT_EQ(parse_dtype("fp32"), at::kFloat);
  EXPECT_THROW(parse_dtype("int8"), Error);
}

TEST(ModelLoad, VariantStringsParse) {
  EXPECT_EQ(parse_variant("auto"), std::nullopt);
  EXPECT_EQ(parse_variant("tiny"), Variant::Tiny);
  EXPECT_EQ(parse_variant("full"), Variant::Full);
  expect_contains(error_of([] { parse_variant("large"); }), "'large'");
}

// A directory with TCDecoder.ckpt is Tiny, one with Wan2.1_VAE.pth Full; with both, Tiny unless Full is
// asked for; asking for a variant whose file is missing, or a directory with neither, names the file(s).
TEST(ModelLoad, VariantComesFromTheDecoderFileOrTheSetting) {
  c10::InferenceMode guard;
  const std::string tiny = test::scratch_dir("variant-tiny"), full = test::scratch_dir("variant-full"),
                    both = test::scratch_dir("variant-both"), none = test::scratch_dir("variant-none");
  const auto tiny_tensors = make_random_model(ModelSpec::tiny(), 5);
  const auto full_tensors = make_random_model(ModelSpec::tiny().with_variant(Variant::Full), 5);
  write_model_dir(tiny, tiny_tensors);
  write_model_dir(full, full_tensors);
  write_model_dir(both, tiny_tensors);
  write_model_dir(none, tiny_tensors);
  write_torch_state_dict(both + "/Wan2.1_VAE.pth", full_tensors.decoder, /*as_state_dict=*/true);
  ASSERT_EQ(std::remove((none + "/TCDecoder.ckpt").c_str()), 0);

  EXPECT_EQ(detect_variant(tiny, std::nullopt), Variant::Tiny);
  EXPECT_EQ(detect_variant(full, std::nullopt), Variant::Full);
  EXPECT_EQ(detect_variant(both, std::nullopt), Variant::Tiny);
  EXPECT_EQ(detect_variant(both, Variant::Full), Variant::Full);
  EXPECT_EQ(detect_variant(full, Variant::Full), Variant::Full);

  Error::Kind kind{};
  std::string e = error_of([&] { detect_variant(tiny, Variant::Full); }, &kind);
  EXPECT_EQ(kind, Error::Kind::NotFound);
  expect_contains(e, tiny + "/Wan2.1_VAE.pth");
  e = error_of([&] { detect_variant(full, Variant::Tiny); }, &kind);
  expect_contains(e, full + "/TCDecoder.ckpt");
  e = error_of([&] { Model::load(none, LoadOptions{}); }, &kind);
  EXPECT_EQ(kind, Error::Kind::NotFound);
  expect_contains(e, "TCDecoder.ckpt");
  expect_contains(e, "Wan2.1_VAE.pth");

  LoadOptions as_full;
  as_full.variant = Variant::Full;
  EXPECT_EQ(Model::load(both, as_full)->variant(), Variant::Full);
  EXPECT_EQ(Model::load(both, LoadOptions{})->variant(), Variant::Tiny);
}

// Wan2.1_VAE.pth holds the whole VideoVAE_ (encoder half included): the Full model binds conv2.* and
// decoder.*, and the encoder's tensors are neither an error nor "unknown tensors".
TEST(ModelLoad, FullModelBindsTheVaeDecoderAndSkipsTheEncoder) {
  c10::InferenceMode guard;
  const std::string dir = test::scratch_dir("variant-full-load");
  const auto tensors = make_random_model(ModelSpec::tiny().with_variant(Variant::Full), 6);
  ASSERT_TRUE(tensors.decoder.count("encoder.conv1.weight"));
  ASSERT_TRUE(tensors.decoder.count("conv1.weight"));
  write_model_dir(dir, tensors);
  std::vector<std::string> warnings;
  LoadOptions o;
  o.log = [&](LogLevel level, const std::string& m) {
    if (level == LogLevel::Warning) warnings.push_back(m);
  };
  auto m = Model::load(dir, o);
  EXPECT_EQ(m->variant(), Variant::Full);
  EXPECT_EQ(m->config().vae_decoder.dim, 8);
  EXPECT_EQ(m->config().vae_decoder.z_dim, 16);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  expect_contains(m->config().describe(), "VAE decoder, base width 8");
  // Loading from the same tensors in memory binds the same weights.
  auto b = Model::from_tensors(tensors, LoadOptions{});
  EXPECT_TRUE(at::equal(m->vae_decoder().head_conv.weight, b->vae_decoder().head_conv.weight));
}
