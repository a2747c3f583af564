// SPDX-License-Identifier: LGPL-2.1-or-later
// safetensors: round trips of every dtype, the fixture files, and rejection of every kind of malformed file.
#include "error.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "writers/safetensors_writer.h"
#include "test_support.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <random>
#include <sstream>

using flashvsr::Error;
using flashvsr::io::Json;
using flashvsr::TensorMap;
namespace t = flashvsr::test;

namespace {

// A raw safetensors file: 8-byte little-endian header length, header text, data bytes.
std::string raw_file(const std::string& header, const std::string& data, std::optional<uint64_t> claimed_len = {}) {
  uint64_t n = claimed_len ? *claimed_len : header.size();
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

// The BadFile/NotFound error reading `bytes` as a file throws; "" when it reads.
std::string read_error(const std::string& dir, const std::string& bytes, Error::Kind kind = Error::Kind::BadFile) {
  const std::string path = dir + "/case.safetensors";
  t::write_file(path, bytes);
  try {
    flashvsr::io::read_safetensors(path);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    // The header-only reader must cope with the same file too (it may accept it: bool values and
    // I/O past the header are only checked with the data).
    try {
      flashvsr::io::read_safetensors_header(path);
    } catch (const Error& h) {
      EXPECT_EQ(h.kind(), kind) << h.what();
    }
    return e.what();
  }
  return "";
}

TensorMap sample_tensors() {
  at::manual_seed(7);
  TensorMap m;
  m["f32"] = at::randn({3, 4});
  m["f64"] = at::randn({5}, at::kDouble);
  m["f16"] = at::randn({2, 3, 2}).to(at::kHalf);
  m["bf16"] = at::randn({7}).to(at::kBFloat16);
  m["i64"] = at::randint(-(int64_t(1) << 40), int64_t(1) << 40, {4}, at::kLong);
  m["i32"] = at::randint(-100000, 100000, {2, 2}, at::kInt);
  m["i16"] = at::randint(-30000, 30000, {3}, at::kShort);
  m["i8"] = at::randint(-128, 128, {6}, at::kChar);
  m["u8"] = at::randint(0, 256, {2, 5}, at::kByte);
  m["bool"] = at::randint(0, 2, {9}, at::kByte).to(at::kBool);
  m["scalar"] = at::scalar_tensor(3.5, at::kFloat);
  m["empty"] = at::zeros({0, 3});
  m["transposed"] = at::arange(12, at::kFloat).reshape({3, 4}).t();  // not contiguous
  return m;
}

void expect_same(const TensorMap& a, const TensorMap& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, x] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    const auto& y = b.at(name);
    EXPECT_EQ(x.scalar_type(), y.scalar_type()) << name;
    EXPECT_EQ(x.sizes(), y.sizes()) << name;
    EXPECT_TRUE(at::equal(x, y)) << name;
  }
}

const std::string kOne = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

}  // namespace

TEST(Safetensors, RoundTripsEveryDtype) {
  const std::string dir = t::scratch_dir("safetensors_roundtrip");
  const TensorMap in = sample_tensors();
  flashvsr::io::write_safetensors(dir + "/x.safetensors", in, {{"format", "pt"}, {"note", "a \"quoted\"\n\x01 value"}});
  const TensorMap out = flashvsr::io::read_safetensors(dir + "/x.safetensors");
  expect_same(in, out);
  for (const auto& [name, x] : out) {
    EXPECT_TRUE(x.is_contiguous()) << name;
    EXPECT_TRUE(x.device().is_cpu()) << name;
  }
  // A write to a tensor stays in it: the file, and what is read from it again, are unchanged.
  const std::string bytes = t::read_file(dir + "/x.safetensors");
  TensorMap again = flashvsr::io::read_safetensors(dir + "/x.safetensors");
  again["f32"].fill_(0);
  EXPECT_TRUE(at::equal(flashvsr::io::read_safetensors(dir + "/x.safetensors")["f32"], in.at("f32")));
  EXPECT_EQ(t::read_file(dir + "/x.safetensors"), bytes);
}

TEST(Safetensors, TensorsAreViewsOfTheFileNotCopies) {
  const std::string dir = t::scratch_dir("safetensors_views");
  // Laid out in name order: a at data bytes [0, 16), b at [16, 24).
  flashvsr::io::write_safetensors(dir + "/x.safetensors", {{"a", at::arange(4, at::kFloat)}, {"b", at::ones({2})}});
  const TensorMap m = flashvsr::io::read_safetensors(dir + "/x.safetensors");
  // Separate allocations could not lie 16 bytes apart (the CPU allocator aligns each to 64 bytes).
  EXPECT_EQ(static_cast<const char*>(m.at("b").data_ptr()) - static_cast<const char*>(m.at("a").data_ptr()), 16);
  EXPECT_TRUE(at::equal(m.at("a"), at::arange(4, at::kFloat)));
}

TEST(Safetensors, TensorsStartingOffTheirAlignmentAreCopiedIntoAlignedMemory) {
  const std::string dir = t::scratch_dir("safetensors_unaligned");
  // The 107-byte header puts the data buffer at file offset 115 and the F32 tensor at 118, 2 bytes off.
  const std::string header = R"({"u":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                             R"("f":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  ASSERT_EQ((8 + header.size() + 3) % 4, 2u);
  std::string data = "\x07\x08\x09";
  const float f[2] = {1.5f, -2.0f};
  data.append(reinterpret_cast<const char*>(f), sizeof f);
  t::write_file(dir + "/x.safetensors", raw_file(header, data));
  const TensorMap m = flashvsr::io::read_safetensors(dir + "/x.safetensors");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(m.at("f").data_ptr()) % alignof(float), 0u);
  EXPECT_TRUE(at::equal(m.at("f"), at::tensor({1.5f, -2.0f})));
  EXPECT_TRUE(at::equal(m.at("u"), at::tensor({7, 8, 9}, at::kByte)));
}

namespace {

// A field of /proc/self/status in KiB ("RssAnon", "RssFile").
int64_t status_kib(const std::string& field) {
  std::istringstream in(t::read_file("/proc/self/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  return -1;
}

}  // namespace

TEST(Safetensors, LoadedTensorsLiveInThePageCacheAndLeaveMemoryWithTheirLastView) {
  if (status_kib("RssAnon") < 0 || status_kib("RssFile") < 0) GTEST_SKIP() << "no RssAnon/RssFile in /proc/self/status";
  const std::string dir = t::scratch_dir("safetensors_memory");
  const int64_t mib = 64;
  // 64 MiB of F32, and a small tensor after it that keeps the file mapped.
  flashvsr::io::write_safetensors(dir + "/big.safetensors", {{"w", at::ones({mib << 18})}, {"x", at::ones({4})}});
  const int64_t anon0 = status_kib("RssAnon"), file0 = status_kib("RssFile");
  TensorMap m = flashvsr::io::read_safetensors(dir + "/big.safetensors");
  EXPECT_EQ(m.at("w").sum().item<double>(), double(mib << 18));  // every page read
  // The bytes are the file's pages (file-backed memory), not a heap copy.
  EXPECT_LT(status_kib("RssAnon") - anon0, (mib / 4) << 10);
  EXPECT_GT(status_kib("RssFile") - file0, (mib * 3 / 4) << 10);
  // Its last view gone, w's pages leave the process although x keeps the file mapped.
  m.erase("w");
  EXPECT_LT(status_kib("RssFile") - file0, (mib / 4) << 10);
  EXPECT_TRUE(at::equal(m.at("x"), at::ones({4})));
}

TEST(Safetensors, WriterPadsHeaderAndLaysTensorsOutInNameOrder) {
  const std::string dir = t::scratch_dir("safetensors_layout");
  TensorMap in;
  in["b"] = at::ones({3}, at::kShort);
  in["a"] = at::ones({1}, at::kByte);
  in["c"] = at::ones({2, 2}, at::kDouble);
  flashvsr::io::write_safetensors(dir + "/x.safetensors", in, {{"k", "v"}});
  const std::string bytes = t::read_file(dir + "/x.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  const Json h = flashvsr::io::parse_json(bytes.substr(8, n), "header");
  EXPECT_EQ(h.at("__metadata__").at("k").get<std::string>(), "v");
  EXPECT_EQ(h.at("a").at("data_offsets")[1].get<int64_t>(), 1);
  EXPECT_EQ(h.at("b").at("data_offsets")[0].get<int64_t>(), 1);
  EXPECT_EQ(h.at("b").at("data_offsets")[1].get<int64_t>(), 7);
  EXPECT_EQ(h.at("c").at("data_offsets")[0].get<int64_t>(), 7);
  EXPECT_EQ(h.at("c").at("dtype").get<std::string>(), "F64");
  EXPECT_EQ(bytes.size(), 8 + n + 1 + 6 + 32);
}

TEST(Safetensors, EmptyMapRoundTrips) {
  const std::string dir = t::scratch_dir("safetensors_empty");
  flashvsr::io::write_safetensors(dir + "/x.safetensors", {});
  EXPECT_TRUE(flashvsr::io::read_safetensors(dir + "/x.safetensors").empty());
  EXPECT_EQ(t::read_file(dir + "/x.safetensors").size() % 8, 0u);
}

TEST(Safetensors, HeaderReaderReportsDtypesAndShapes) {
  const std::string dir = t::scratch_dir("safetensors_header");
  const TensorMap in = sample_tensors();
  flashvsr::io::write_safetensors(dir + "/x.safetensors", in);
  const auto info = flashvsr::io::read_safetensors_header(dir + "/x.safetensors");
  ASSERT_EQ(info.size(), in.size());
  for (const auto& [name, x] : in) {
    EXPECT_EQ(info.at(name).dtype, x.scalar_type()) << name;
    EXPECT_EQ(info.at(name).shape, x.sizes().vec()) << name;
  }
}

TEST(Safetensors, ReadsHandWrittenFileWithUnsortedKeysAndOffsets) {
  const std::string dir = t::scratch_dir("safetensors_hand");
  // Key order differs from offset order; whitespace padding after the JSON is allowed.
  const std::string header =
      R"({"z":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}, "a":{"dtype":"U8","shape":[3],"data_offsets":[4,7]},)"
      R"( "__metadata__":{"x":"y"}})" "    ";
  const std::string data("\x01\x00\xff\xff\x07\x08\x09", 7);
  t::write_file(dir + "/x.safetensors", raw_file(header, data));
  const TensorMap m = flashvsr::io::read_safetensors(dir + "/x.safetensors");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_TRUE(at::equal(m.at("z"), at::tensor({1, -1}, at::kShort)));
  EXPECT_TRUE(at::equal(m.at("a"), at::tensor({7, 8, 9}, at::kByte)));
}

// The fixtures' files, of every variant (one case per fixture: Vendored/..., Shared/...).
class SafetensorsFixtures : public t::AnyVariantFixtureTest {};

TEST_P(SafetensorsFixtures, ReadsFixtureFiles) {
  const std::string& d = fixture();
  const Json params = flashvsr::io::read_json_file(d + "/params.json");
  const TensorMap model = flashvsr::io::read_safetensors(d + "/model/diffusion_pytorch_model_streaming_dmd.safetensors");
  EXPECT_GT(model.size(), 10u);
  for (const auto& [name, x] : model) {
    EXPECT_TRUE(x.is_floating_point()) << name;
    EXPECT_TRUE(at::isfinite(x.to(at::kFloat)).all().item<bool>()) << name;
  }
  const auto header = flashvsr::io::read_safetensors_header(d + "/model/diffusion_pytorch_model_streaming_dmd.safetensors");
  ASSERT_EQ(header.size(), model.size());
  for (const auto& [name, x] : model) EXPECT_EQ(header.at(name).shape, x.sizes().vec()) << name;

  const TensorMap input = flashvsr::io::read_safetensors(d + "/input.safetensors");
  const auto& lr = input.at("lr_frames");
  EXPECT_EQ(lr.scalar_type(), at::kByte);
  EXPECT_EQ(lr.sizes().vec(), (std::vector<int64_t>{params.at("num_frames").get<int64_t>(), params.at("lr_height").get<int64_t>(),
                                                     params.at("lr_width").get<int64_t>(), 3}));
  EXPECT_EQ(input.at("noise").scalar_type(), at::kFloat);
  EXPECT_EQ(input.at("noise").dim(), 5);
  EXPECT_EQ(input.at("lq_video_u8").size(0), params.at("padded_frames").get<int64_t>());

  const TensorMap expected = flashvsr::io::read_safetensors(d + "/expected.safetensors");
  ASSERT_TRUE(expected.count("frames") || expected.count("frames_u8"));
  if (expected.count("frames_u8")) {
    EXPECT_EQ(expected.at("frames_u8").scalar_type(), at::kByte);
    EXPECT_EQ(expected.at("frames_u8").size(0), params.at("num_frames").get<int64_t>());
  } else {
    EXPECT_EQ(expected.at("frames").scalar_type(), at::kHalf);
    EXPECT_EQ(expected.at("frames").size(1), params.at("num_frames").get<int64_t>());
    EXPECT_LE(expected.at("frames").abs().max().item<float>(), 1.01f);
  }
}

FLASHVSR_FIXTURE_TESTS(SafetensorsFixtures);

TEST(Safetensors, MissingFileIsNotFound) {
  const std::string dir = t::scratch_dir("safetensors_missing");
  try {
    flashvsr::io::read_safetensors(dir + "/nope.safetensors");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::NotFound);
    EXPECT_NE(std::string(e.what()).find(dir + "/nope.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(flashvsr::io::read_safetensors_header(dir + "/nope.safetensors"), Error);
  try {
    flashvsr::io::read_safetensors(dir);  // a directory
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::NotFound);
  }
}

TEST(Safetensors, TruncationAtEveryCutPointIsAnError) {
  const std::string dir = t::scratch_dir("safetensors_truncated");
  TensorMap in;
  in["a"] = at::randn({3, 5});
  in["b"] = at::randint(0, 2, {4}, at::kBool);
  in["c"] = at::randn({2}).to(at::kBFloat16);
  flashvsr::io::write_safetensors(dir + "/full.safetensors", in);
  const std::string full = t::read_file(dir + "/full.safetensors");
  for (size_t cut = 0; cut < full.size(); ++cut) EXPECT_NE(read_error(dir, full.substr(0, cut)), "") << "cut " << cut;
}

TEST(Safetensors, BadHeaderLengthIsRejected) {
  const std::string dir = t::scratch_dir("safetensors_header_len");
  EXPECT_NE(read_error(dir, ""), "");
  EXPECT_NE(read_error(dir, "\x02\x00\x00"), "");
  EXPECT_NE(read_error(dir, raw_file("{}", "", 3)), "");
  EXPECT_NE(read_error(dir, raw_file(kOne, std::string(8, '\0'), 1000)), "");
  std::string msg = read_error(dir, raw_file("{}", "", ~uint64_t(1)));
  EXPECT_NE(msg.find("header length"), std::string::npos) << msg;
  EXPECT_NE(read_error(dir, raw_file("", "")), "");  // zero-length header is not JSON
  // A header over the 100 MB cap is refused before it is read (a sparse file, so this is cheap).
  const std::string big = dir + "/big.safetensors";
  t::write_file(big, raw_file("", "", 100'000'001));
  ASSERT_EQ(::truncate(big.c_str(), 8 + 100'000'001 + 16), 0);
  try {
    flashvsr::io::read_safetensors(big);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("limit"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, HeaderThatIsNotAJsonObjectIsRejected) {
  const std::string dir = t::scratch_dir("safetensors_not_json");
  std::string msg = read_error(dir, raw_file("{\"a\":", ""));
  EXPECT_NE(msg.find("JSON"), std::string::npos) << msg;
  EXPECT_NE(read_error(dir, raw_file("not json", "")), "");
  EXPECT_NE(read_error(dir, raw_file("[]", "")), "");
  EXPECT_NE(read_error(dir, raw_file("{\"a\":1}", "")), "");
  EXPECT_NE(read_error(dir, raw_file("{\"a\":[]}", "")), "");
  EXPECT_NE(read_error(dir, raw_file(std::string("{}\0\0", 4), "")), "");  // NUL padding is not whitespace
  EXPECT_NE(read_error(dir, raw_file(std::string(100, '[') + std::string(100, ']'), "")), "");
}

TEST(Safetensors, UnknownDtypeIsRejectedNamingTensorAndDtype) {
  const std::string dir = t::scratch_dir("safetensors_dtype");
  std::string msg =
      read_error(dir, raw_file(R"({"w.x":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", "ab"));
  EXPECT_NE(msg.find("w.x"), std::string::npos) << msg;
  EXPECT_NE(msg.find("F8_E4M3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("case.safetensors"), std::string::npos) << msg;
  EXPECT_NE(read_error(dir, raw_file(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", "abcd")), "");
  EXPECT_NE(read_error(dir, raw_file(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd")), "");
}

TEST(Safetensors, NegativeOrHugeDimsAreRejected) {
  const std::string dir = t::scratch_dir("safetensors_dims");
  auto one = [&](const std::string& shape, const std::string& offsets) {
    return read_error(dir, raw_file(R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}}",
                                    std::string(8, '\0')));
  };
  std::string msg = one("[-1]", "[0,8]");
  EXPECT_NE(msg.find("negative"), std::string::npos) << msg;
  EXPECT_NE(one("[4611686018427387904, 4611686018427387904]", "[0,8]"), "");
  EXPECT_NE(one("[9223372036854775807]", "[0,8]"), "");
  EXPECT_NE(one("[99999999999999999999]", "[0,8]"), "");
  EXPECT_NE(one("[2.5]", "[0,8]"), "");
  EXPECT_NE(one("[\"2\"]", "[0,8]"), "");
  EXPECT_NE(one("2", "[0,8]"), "");
  std::string rank70 = "[1";
  for (int i = 1; i < 70; ++i) rank70 += ",1";
  EXPECT_NE(one(rank70 + "]", "[0,4]"), "");
  // A zero dimension is fine: an empty tensor with an empty byte range.
  const std::string path = dir + "/ok.safetensors";
  t::write_file(path, raw_file(R"({"e":{"dtype":"F32","shape":[0,1000000000000],"data_offsets":[0,0]},)"
                               R"("w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                               "x"));
  EXPECT_EQ(flashvsr::io::read_safetensors(path).at("e").numel(), 0);
}

TEST(Safetensors, OffsetsOutOfRangeAreRejected) {
  const std::string dir = t::scratch_dir("safetensors_offsets");
  auto one = [&](const std::string& offsets) {
    return read_error(dir, raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":)" + offsets + "}}",
                                    std::string(8, '\0')));
  };
  std::string msg = one("[8,16]");
  EXPECT_NE(msg.find("'w'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("16"), std::string::npos) << msg;
  EXPECT_NE(one("[-8,0]"), "");
  EXPECT_NE(one("[8,0]"), "");
  EXPECT_NE(one("[0,18446744073709551616]"), "");
  EXPECT_NE(one("[9223372036854775800,9223372036854775807]"), "");
  EXPECT_NE(one("[0]"), "");
  EXPECT_NE(one("[0,8,16]"), "");
  EXPECT_NE(one("{\"begin\":0}"), "");
  EXPECT_NE(one("[0,8.5]"), "");
}

TEST(Safetensors, OverlappingOffsetsAreRejected) {
  const std::string dir = t::scratch_dir("safetensors_overlap");
  std::string msg = read_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                             std::string(12, '\0')));
  EXPECT_NE(msg.find("overlap"), std::string::npos) << msg;
  // The same range twice.
  EXPECT_NE(read_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                                     std::string(8, '\0'))),
            "");
}

TEST(Safetensors, SizeMismatchIsRejected) {
  const std::string dir = t::scratch_dir("safetensors_size");
  std::string msg = read_error(dir, raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                                             std::string(8, '\0')));
  EXPECT_NE(msg.find("12"), std::string::npos) << msg;  // expected
  EXPECT_NE(msg.find("8"), std::string::npos) << msg;   // found
  EXPECT_NE(read_error(dir, raw_file(R"({"w":{"dtype":"BF16","shape":[],"data_offsets":[0,4]}})",
                                     std::string(4, '\0'))),
            "");
}

TEST(Safetensors, UncoveredBytesAreRejected) {
  const std::string dir = t::scratch_dir("safetensors_gaps");
  // Trailing bytes after the last tensor.
  EXPECT_NE(read_error(dir, raw_file(kOne, std::string(9, '\0'))), "");
  // A gap between tensors.
  EXPECT_NE(read_error(dir, raw_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                     R"("b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
                                     "abc")),
            "");
}

TEST(Safetensors, MissingFieldsAndBadMetadataAreRejected) {
  const std::string dir = t::scratch_dir("safetensors_fields");
  EXPECT_NE(read_error(dir, raw_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'))), "");
  EXPECT_NE(read_error(dir, raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0'))), "");
  EXPECT_NE(read_error(dir, raw_file(R"({"w":{"dtype":"F32","shape":[2]}})", std::string(8, '\0'))), "");
  EXPECT_NE(read_error(dir, raw_file(R"({"__metadata__":{"a":1}})", "")), "");
  EXPECT_NE(read_error(dir, raw_file(R"({"__metadata__":"x"})", "")), "");
  EXPECT_NE(read_error(dir, raw_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{}})", "")), "");
  EXPECT_EQ(read_error(dir, raw_file(R"({"__metadata__":{"a":"b"}})", "")), "");
}

TEST(Safetensors, BoolBytesOtherThanZeroOrOneAreRejected) {
  const std::string dir = t::scratch_dir("safetensors_bool");
  const std::string header = R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})";
  EXPECT_EQ(read_error(dir, raw_file(header, std::string("\x00\x01\x01", 3))), "");
  std::string msg = read_error(dir, raw_file(header, std::string("\x00\x02\x01", 3)));
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
}

TEST(Safetensors, RandomByteCorruptionNeverCrashes) {
  const std::string dir = t::scratch_dir("safetensors_corrupt");
  TensorMap in;
  in["weight"] = at::randn({4, 3});
  in["flag"] = at::ones({5}, at::kBool);
  in["ids"] = at::arange(6, at::kLong);
  flashvsr::io::write_safetensors(dir + "/full.safetensors", in, {{"format", "pt"}});
  const std::string full = t::read_file(dir + "/full.safetensors");
  std::mt19937 rng(99);
  const std::string path = dir + "/case.safetensors";
  int ok = 0, rejected = 0;
  for (size_t pos = 0; pos < full.size(); ++pos) {
    for (unsigned char value : {static_cast<unsigned char>(full[pos] ^ 0xFF), static_cast<unsigned char>(rng())}) {
      std::string bytes = full;
      bytes[pos] = static_cast<char>(value);
      t::write_file(path, bytes);
      try {
        flashvsr::io::read_safetensors(path);
        ++ok;
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), Error::Kind::BadFile);
        ++rejected;
      }
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(ok, 0);  // flips inside float data are still valid files
}

TEST(Safetensors, WriterRejectsWhatItCannotRepresent) {
  const std::string dir = t::scratch_dir("safetensors_writer_errors");
  TensorMap m;
  m["c"] = at::zeros({2}, at::kComplexFloat);
  EXPECT_THROW(flashvsr::io::write_safetensors(dir + "/x.safetensors", m), Error);
  m.clear();
  m["__metadata__"] = at::zeros({2});
  EXPECT_THROW(flashvsr::io::write_safetensors(dir + "/x.safetensors", m), Error);
  m.clear();
  m["u"] = at::Tensor();
  EXPECT_THROW(flashvsr::io::write_safetensors(dir + "/x.safetensors", m), Error);
  m.clear();
  m["ok"] = at::zeros({2});
  try {
    flashvsr::io::write_safetensors(dir + "/no/such/dir/x.safetensors", m);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::NotFound);
  }
}
