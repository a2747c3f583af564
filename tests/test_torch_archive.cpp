// SPDX-License-Identifier: LGPL-2.1-or-later
// torch.save zip archives: the fixtures, our writer, hand-built hostile archives, and interop with Python.
#include "error.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "writers/safetensors_writer.h"
#include "test_support.h"
#include "io/torch_archive.h"
#include "writers/torch_archive_writer.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <set>
#include <string>
#include <vector>

using flashvsr::Error;
using flashvsr::TensorMap;
namespace t = flashvsr::test;

namespace {

// ---- Independent helpers for building archives byte by byte. ----

// A string literal with embedded NULs, without counting its length by hand.
template <size_t N>
std::string B(const char (&s)[N]) {
  return std::string(s, N - 1);
}


uint32_t test_crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void le(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}
uint64_t get_le(const std::string& s, size_t pos, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s.at(pos + i));
  return v;
}

struct ZipItem {
  std::string name, data;
  uint16_t method = 0;
};

struct ZipOptions {
  bool zip64_extra = false;  // saturate sizes/offsets in the central directory, real values in a ZIP64 extra
  bool zip64_eocd = false;   // add a ZIP64 end-of-central-directory record and locator
  bool bad_crc = false;
};

std::string build_zip(const std::vector<ZipItem>& items, const ZipOptions& o = {}) {
  std::string out, cd;
  for (const auto& it : items) {
    const uint64_t offset = out.size();
    const uint32_t crc = test_crc32(it.data) ^ (o.bad_crc ? 1u : 0u);
    le(out, 0x04034b50, 4);
    le(out, 20, 2);
    le(out, 0, 2);
    le(out, it.method, 2);
    le(out, 0, 4);
    le(out, crc, 4);
    le(out, it.data.size(), 4);
    le(out, it.data.size(), 4);
    le(out, it.name.size(), 2);
    le(out, 0, 2);
    out += it.name + it.data;
    std::string extra;
    if (o.zip64_extra) {
      le(extra, 1, 2);
      le(extra, 24, 2);
      le(extra, it.data.size(), 8);
      le(extra, it.data.size(), 8);
      le(extra, offset, 8);
    }
    le(cd, 0x02014b50, 4);
    le(cd, 45, 2);
    le(cd, 45, 2);
    le(cd, 0, 2);
    le(cd, it.method, 2);
    le(cd, 0, 4);
    le(cd, crc, 4);
    le(cd, o.zip64_extra ? 0xFFFFFFFFu : it.data.size(), 4);
    le(cd, o.zip64_extra ? 0xFFFFFFFFu : it.data.size(), 4);
    le(cd, it.name.size(), 2);
    le(cd, extra.size(), 2);
    le(cd, 0, 2);
    le(cd, 0, 2);
    le(cd, 0, 2);
    le(cd, 0, 4);
    le(cd, o.zip64_extra ? 0xFFFFFFFFu : offset, 4);
    cd += it.name + extra;
  }
  const uint64_t cd_offset = out.size();
  out += cd;
  if (o.zip64_eocd) {
    const uint64_t rec = out.size();
    le(out, 0x06064b50, 4);
    le(out, 44, 8);
    le(out, 45, 2);
    le(out, 45, 2);
    le(out, 0, 4);
    le(out, 0, 4);
    le(out, items.size(), 8);
    le(out, items.size(), 8);
    le(out, cd.size(), 8);
    le(out, cd_offset, 8);
    le(out, 0x07064b50, 4);
    le(out, 0, 4);
    le(out, rec, 8);
    le(out, 1, 4);
  }
  le(out, 0x06054b50, 4);
  le(out, 0, 2);
  le(out, 0, 2);
  le(out, o.zip64_eocd ? 0xFFFF : items.size(), 2);
  le(out, o.zip64_eocd ? 0xFFFF : items.size(), 2);
  le(out, o.zip64_eocd ? 0xFFFFFFFFu : cd.size(), 4);
  le(out, o.zip64_eocd ? 0xFFFFFFFFu : cd_offset, 4);
  le(out, 0, 2);
  return out;
}

// The entries of an archive without data descriptors (as our writer makes), walking the local headers.
struct LocalEntry {
  std::string name, data;
  uint64_t data_offset;
  uint32_t crc;
};
std::vector<LocalEntry> walk_local_headers(const std::string& z) {
  std::vector<LocalEntry> out;
  size_t pos = 0;
  while (pos + 30 <= z.size() && get_le(z, pos, 4) == 0x04034b50) {
    const uint64_t size = get_le(z, pos + 18, 4), name_len = get_le(z, pos + 26, 2), extra_len = get_le(z, pos + 28, 2);
    LocalEntry e;
    e.crc = static_cast<uint32_t>(get_le(z, pos + 14, 4));
    e.name = z.substr(pos + 30, name_len);
    e.data_offset = pos + 30 + name_len + extra_len;
    e.data = z.substr(e.data_offset, size);
    out.push_back(e);
    pos = e.data_offset + size;
  }
  return out;
}

// Pickle opcodes by hand.
struct Pickle {
  std::string b = B("\x80\x02");
  Pickle& op(char c) {
    b += c;
    return *this;
  }
  Pickle& str(const std::string& s) {
    b += 'X';
    le(b, s.size(), 4);
    b += s;
    return *this;
  }
  Pickle& integer(int64_t v) {
    b += 'J';
    le(b, static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    b += 'c' + module + '\n' + name + '\n';
    return *this;
  }
  Pickle& tuple(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    return op('t');
  }
  Pickle& ordered_dict() { return global("collections", "OrderedDict").op(')').op('R'); }
  // _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())
  Pickle& tensor(const std::string& type, const std::string& key, int64_t numel, int64_t offset,
                 const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").op('(').op('(').str("storage").global("torch", type).str(key);
    str("cpu").integer(numel).op('t').op('Q').integer(offset).tuple(size).tuple(stride).op('\x89');
    return ordered_dict().op('t').op('R');
  }
  std::string done() { return b + "."; }
};

std::string float_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// An archive "<prefix>/data.pkl" + "<prefix>/data/<key>" records.
std::string make_archive(const std::string& pickle, const std::map<std::string, std::string>& storages,
                         const std::string& prefix = "archive", const ZipOptions& o = {}) {
  std::vector<ZipItem> items{{prefix + "/data.pkl", pickle}};
  for (const auto& [k, v] : storages) items.push_back({prefix + "/data/" + k, v});
  items.push_back({prefix + "/version", "3\n"});
  return build_zip(items, o);
}

// Runs `fn` on `bytes` written to a file; returns the flashvsr::Error message, or "" on success.
template <typename Fn>
std::string error_of(const std::string& dir, const std::string& bytes, Fn fn) {
  const std::string path = dir + "/case.pt";
  t::write_file(path, bytes);
  try {
    fn(path);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::BadFile) << e.what();
    return e.what();
  }
  return "";
}
std::string dict_error(const std::string& dir, const std::string& bytes) {
  return error_of(dir, bytes, [](const std::string& p) { flashvsr::io::read_torch_state_dict(p); });
}
std::string tensor_error(const std::string& dir, const std::string& bytes) {
  return error_of(dir, bytes, [](const std::string& p) { flashvsr::io::read_torch_tensor(p); });
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TensorMap sample_tensors() {
  at::manual_seed(11);
  TensorMap m;
  m["layer.0.weight"] = at::randn({4, 3, 2});
  m["layer.0.bias"] = at::randn({4}, at::kDouble);
  m["half"] = at::randn({3, 3}).to(at::kHalf);
  m["bf16"] = at::randn({2, 5}).to(at::kBFloat16);
  m["long"] = at::tensor(std::vector<int64_t>{int64_t(1) << 40, -(int64_t(1) << 35), 70000, -5, 0});
  m["int"] = at::randint(-100000, 100000, {3}, at::kInt);
  m["short"] = at::randint(-30000, 30000, {4}, at::kShort);
  m["char"] = at::randint(-128, 128, {5}, at::kChar);
  m["byte"] = at::randint(0, 256, {6}, at::kByte);
  m["bool"] = at::randint(0, 2, {7}, at::kByte).to(at::kBool);
  m["scalar"] = at::scalar_tensor(2.5, at::kFloat);
  m["empty"] = at::zeros({0, 4});
  m["transposed"] = at::arange(20, at::kFloat).reshape({4, 5}).t();
  m["unicode.名前"] = at::ones({2});
  return m;
}

void expect_same(const TensorMap& expected, const TensorMap& got) {
  ASSERT_EQ(expected.size(), got.size());
  for (const auto& [name, x] : expected) {
    ASSERT_TRUE(got.count(name)) << name;
    const at::Tensor& y = got.at(name);
    EXPECT_EQ(x.scalar_type(), y.scalar_type()) << name;
    EXPECT_EQ(x.sizes(), y.sizes()) << name;
    EXPECT_TRUE(y.is_contiguous()) << name;
    EXPECT_TRUE(at::equal(x.contiguous(), y)) << name;
  }
}

std::string fixture_model(const std::string& dir, const std::string& file) { return dir + "/model/" + file; }

// Python that dumps tensors to / loads tensors from a safetensors file by hand (no safetensors package there).
const char* kPyHelpers = R"PY(
import json, struct, sys, collections, torch
DT = {torch.float64: 'F64', torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.int64: 'I64',
      torch.int32: 'I32', torch.int16: 'I16', torch.int8: 'I8', torch.uint8: 'U8', torch.bool: 'BOOL'}
RDT = {v: k for k, v in DT.items()}
def dump(path, tensors):
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        x = tensors[k].contiguous()
        b = bytes(x.reshape(-1).view(torch.uint8).tolist()) if x.numel() else b''
        header[k] = {'dtype': DT[x.dtype], 'shape': list(x.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b' ' * (-len(h) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + b''.join(blobs))
def load(path):
    data = open(path, 'rb').read()
    n = struct.unpack('<Q', data[:8])[0]
    out = {}
    for k, v in json.loads(data[8:8 + n]).items():
        if k == '__metadata__':
            continue
        b, e = v['data_offsets']
        raw = bytearray(data[8 + n + b:8 + n + e])
        x = torch.frombuffer(raw, dtype=RDT[v['dtype']]) if raw else torch.empty(0, dtype=RDT[v['dtype']])
        out[k] = x.reshape(v['shape'])
    return out
)PY";

// Runs a Python script (helpers prepended) with the given arguments; returns its exit status, output in *out.
int run_python(const std::string& py, const std::string& dir, const std::string& body, const std::string& args,
               std::string* out) {
  const std::string script = dir + "/script.py";
  t::write_file(script, std::string(kPyHelpers) + body);
  return t::run_command("'" + py + "' '" + script + "' " + args + " 2>&1", out);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Fixture files.

// One case per fixture, of either variant. LQ_proj_in.ckpt is in both; the stage-3 file is TCDecoder.ckpt
// (Tiny: decoder.* only) or Wan2.1_VAE.pth (Full: the whole VideoVAE_ state dict, encoder half included).
class TorchArchiveFixtures : public t::AnyVariantFixtureTest {};

// The fixture's stage-3 file name and the top-level key prefixes its state dict holds, from params.json.
struct DecoderFile {
  std::string name;
  std::vector<std::string> prefixes;
};
DecoderFile decoder_file(const std::string& fixture) {
  if (t::fixture_variant(fixture) == "full") return {"Wan2.1_VAE.pth", {"encoder.", "conv1.", "conv2.", "decoder."}};
  return {"TCDecoder.ckpt", {"decoder."}};
}

TEST_P(TorchArchiveFixtures, ReadsPlainDictCheckpointFixture) {
  const std::string& d = fixture();
  const TensorMap m = flashvsr::io::read_torch_state_dict(fixture_model(d, "LQ_proj_in.ckpt"));
  for (const char* key : {"conv1.weight", "conv1.bias", "norm1.gamma", "conv2.weight", "conv2.bias", "norm2.gamma",
                          "linear_layers.0.weight", "linear_layers.0.bias"})
    EXPECT_TRUE(m.count(key)) << key;
  for (const auto& [name, x] : m) {
    EXPECT_EQ(x.scalar_type(), at::kBFloat16) << name;
    EXPECT_TRUE(x.is_contiguous()) << name;
    EXPECT_TRUE(at::isfinite(x.to(at::kFloat)).all().item<bool>()) << name;
  }
  EXPECT_EQ(m.at("conv1.weight").dim(), 5);
  EXPECT_EQ(m.at("conv1.bias").size(0), m.at("conv1.weight").size(0));
  EXPECT_GT(m.at("conv1.weight").to(at::kFloat).abs().sum().item<float>(), 0.0f);
}

TEST_P(TorchArchiveFixtures, ReadsStateDictWithMetadataFixture) {
  const std::string& d = fixture();
  const DecoderFile file = decoder_file(d);
  const TensorMap m = flashvsr::io::read_torch_state_dict(fixture_model(d, file.name));
  // TCDecoder's first conv is 2-D; the VAE decoder's first conv is a 3-D (causal) one.
  const bool full = file.name == "Wan2.1_VAE.pth";
  ASSERT_TRUE(m.count(full ? "decoder.conv1.weight" : "decoder.1.weight"));
  EXPECT_EQ(m.at(full ? "decoder.conv1.weight" : "decoder.1.weight").dim(), full ? 5 : 4);
  std::set<std::string> seen;
  for (const auto& [name, x] : m) {
    bool known = false;
    for (const auto& p : file.prefixes)
      if (name.rfind(p, 0) == 0) {
        known = true;
        seen.insert(p);
      }
    EXPECT_TRUE(known) << name;
    EXPECT_EQ(x.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(x.is_contiguous()) << name;
  }
  EXPECT_EQ(seen.size(), file.prefixes.size());
}

TEST_P(TorchArchiveFixtures, ReadsSingleTensorFixture) {
  const std::string& d = fixture();
  const auto params = flashvsr::io::read_json_file(d + "/params.json");
  const at::Tensor x = flashvsr::io::read_torch_tensor(fixture_model(d, "posi_prompt.pth"));
  EXPECT_EQ(x.scalar_type(), at::kBFloat16);
  ASSERT_EQ(x.dim(), 3);
  EXPECT_EQ(x.size(0), 1);
  EXPECT_EQ(x.size(2), params.at("text_dim").get<int64_t>());
  EXPECT_TRUE(x.is_contiguous());
  // The wrong reader for the object is a clear error, not a crash.
  try {
    flashvsr::io::read_torch_state_dict(fixture_model(d, "posi_prompt.pth"));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "expected a dict")) << e.what();
  }
  EXPECT_THROW(flashvsr::io::read_torch_tensor(fixture_model(d, decoder_file(d).name)), Error);
}

FLASHVSR_FIXTURE_TESTS(TorchArchiveFixtures);

TEST(TorchArchive, FixturesMatchPythonTorchLoad) {
  const std::string d = t::vendored_fixture();
  const std::string py = t::python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python with torch";
  const std::string dir = t::scratch_dir("torch_archive_fixtures_py");
  std::string out;
  const std::string body = R"PY(
src, dst = sys.argv[1], sys.argv[2]
obj = torch.load(src, weights_only=True)
dump(dst, obj if isinstance(obj, dict) else {'tensor': obj})
)PY";
  for (const char* file : {"LQ_proj_in.ckpt", "TCDecoder.ckpt", "posi_prompt.pth"}) {
    SCOPED_TRACE(file);
    const std::string ref = dir + "/" + file + ".safetensors";
    ASSERT_EQ(run_python(py, dir, body, "'" + fixture_model(d, file) + "' '" + ref + "'", &out), 0) << out;
    const TensorMap expected = flashvsr::io::read_safetensors(ref);
    if (std::string(file) == "posi_prompt.pth")
      expect_same(expected, {{"tensor", flashvsr::io::read_torch_tensor(fixture_model(d, file))}});
    else
      expect_same(expected, flashvsr::io::read_torch_state_dict(fixture_model(d, file)));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Our writer.

TEST(TorchArchive, WriterRoundTripsEveryDtype) {
  const std::string dir = t::scratch_dir("torch_archive_roundtrip");
  const TensorMap in = sample_tensors();
  for (bool as_state_dict : {true, false}) {
    const std::string path = dir + "/sd" + std::to_string(as_state_dict) + ".pt";
    flashvsr::io::write_torch_state_dict(path, in, as_state_dict);
    expect_same(in, flashvsr::io::read_torch_state_dict(path));
  }
  flashvsr::io::write_torch_state_dict(dir + "/empty.pt", {});
  EXPECT_TRUE(flashvsr::io::read_torch_state_dict(dir + "/empty.pt").empty());
  for (const auto& [name, x] : in) {
    flashvsr::io::write_torch_tensor(dir + "/one.pt", x);
    const at::Tensor y = flashvsr::io::read_torch_tensor(dir + "/one.pt");
    EXPECT_EQ(y.scalar_type(), x.scalar_type()) << name;
    EXPECT_EQ(y.sizes(), x.sizes()) << name;
    EXPECT_TRUE(at::equal(x.contiguous(), y)) << name;
  }
}

TEST(TorchArchive, WriterLayoutIsAlignedStoredAndChecksummed) {
  const std::string dir = t::scratch_dir("torch_archive_layout");
  TensorMap in;
  in["a"] = at::arange(10, at::kFloat);
  in["b"] = at::arange(3, at::kByte);
  flashvsr::io::write_torch_state_dict(dir + "/x.pt", in);
  const std::string z = t::read_file(dir + "/x.pt");
  const auto entries = walk_local_headers(z);
  std::vector<std::string> names;
  for (const auto& e : entries) {
    names.push_back(e.name);
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
    EXPECT_EQ(e.crc, test_crc32(e.data)) << e.name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"archive/data.pkl", "archive/byteorder", "archive/data/0",
                                             "archive/data/1", "archive/version"}));
  EXPECT_EQ(entries[1].data, "little");
  EXPECT_EQ(entries[4].data, "3\n");
  EXPECT_EQ(entries[2].data, std::string(reinterpret_cast<const char*>(in["a"].data_ptr()), 40));
  // Protocol 2 pickle, stopping at the end.
  EXPECT_EQ(entries[0].data.substr(0, 2), B("\x80\x02"));
  EXPECT_EQ(entries[0].data.back(), '.');
}

TEST(TorchArchive, WriterRejectsUnsupportedTensors) {
  const std::string dir = t::scratch_dir("torch_archive_writer_errors");
  EXPECT_THROW(flashvsr::io::write_torch_tensor(dir + "/x.pt", at::zeros({2}, at::kComplexFloat)), Error);
  EXPECT_THROW(flashvsr::io::write_torch_tensor(dir + "/x.pt", at::Tensor()), Error);
  try {
    flashvsr::io::write_torch_tensor(dir + "/missing/dir/x.pt", at::zeros({2}));
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::NotFound);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Hand-built archives.

TEST(TorchArchive, ReadsViewsSharingOneStorage) {
  const std::string dir = t::scratch_dir("torch_archive_views");
  std::vector<float> v(24);
  for (int i = 0; i < 24; ++i) v[i] = static_cast<float>(i);
  Pickle p;
  p.op('}').op('(');
  p.str("whole").tensor("FloatStorage", "0", 24, 0, {24}, {1});
  p.str("slice").tensor("FloatStorage", "0", 24, 5, {2, 3}, {3, 1});
  p.str("transposed").tensor("FloatStorage", "0", 24, 0, {6, 4}, {1, 6});
  p.str("strided").tensor("FloatStorage", "0", 24, 1, {4}, {5});
  p.str("broadcast").tensor("FloatStorage", "0", 24, 7, {3, 2}, {0, 1});
  p.str("empty").tensor("FloatStorage", "0", 24, 24, {0, 5}, {5, 1});
  p.op('u');
  const std::string path = dir + "/x.pt";
  t::write_file(path, make_archive(p.done(), {{"0", float_bytes(v)}}));
  const TensorMap m = flashvsr::io::read_torch_state_dict(path);
  const at::Tensor base = at::arange(24, at::kFloat);
  EXPECT_TRUE(at::equal(m.at("whole"), base));
  EXPECT_TRUE(at::equal(m.at("slice"), base.as_strided({2, 3}, {3, 1}, 5)));
  EXPECT_TRUE(at::equal(m.at("transposed"), base.reshape({4, 6}).t()));
  EXPECT_TRUE(at::equal(m.at("strided"), at::tensor(std::vector<float>{1, 6, 11, 16})));
  EXPECT_TRUE(at::equal(m.at("broadcast"), at::tensor(std::vector<float>{7, 8, 7, 8, 7, 8}).reshape({3, 2})));
  EXPECT_EQ(m.at("empty").sizes(), (std::vector<int64_t>{0, 5}));
  // Each tensor owns its memory, separate from the others.
  for (const auto& [name, x] : m) EXPECT_TRUE(x.is_contiguous()) << name;
  EXPECT_NE(m.at("whole").data_ptr(), m.at("slice").data_ptr());
}

TEST(TorchArchive, AcceptsAnyArchivePrefixAndZip64Records) {
  const std::string dir = t::scratch_dir("torch_archive_prefix");
  Pickle p;
  p.tensor("HalfStorage", "7", 2, 0, {2}, {1});
  const std::string data("\x00\x3c\x00\xc0", 4);  // 1.0, -2.0 in half precision
  for (int variant = 0; variant < 4; ++variant) {
    ZipOptions o;
    o.zip64_extra = variant & 1;
    o.zip64_eocd = variant & 2;
    SCOPED_TRACE(variant);
    const std::string path = dir + "/x.pt";
    t::write_file(path, make_archive(p.done(), {{"7", data}}, "my model.v2", o));
    const at::Tensor x = flashvsr::io::read_torch_tensor(path);
    EXPECT_TRUE(at::equal(x, at::tensor(std::vector<float>{1.0f, -2.0f}).to(at::kHalf)));
  }
}

TEST(TorchArchive, StateDictBuildWithMetadataIsAccepted) {
  const std::string dir = t::scratch_dir("torch_archive_build");
  Pickle p;
  p.ordered_dict().op('(').str("w").tensor("ByteStorage", "0", 3, 0, {3}, {1}).op('u');
  // BUILD with {'_metadata': OrderedDict({'': {'version': 1}})}, as Python's state_dict() pickles.
  p.op('}').str("_metadata").ordered_dict().str("").op('}').str("version").integer(1).op('s').op('s').op('s').op('b');
  EXPECT_EQ(dict_error(dir, make_archive(p.done(), {{"0", "abc"}})), "");
  // BUILD on anything but a dict is refused.
  Pickle q;
  q.tensor("ByteStorage", "0", 3, 0, {3}, {1}).op('}').op('b');
  EXPECT_TRUE(contains(tensor_error(dir, make_archive(q.done(), {{"0", "abc"}})), "BUILD"));
}

TEST(TorchArchive, ForbiddenGlobalIsRejectedByName) {
  const std::string dir = t::scratch_dir("torch_archive_global");
  Pickle p;
  p.global("os", "system").str("echo pwned").op('\x85').op('R');
  std::string msg = dict_error(dir, make_archive(p.done(), {}));
  EXPECT_TRUE(contains(msg, "os.system")) << msg;
  EXPECT_TRUE(contains(msg, "forbidden")) << msg;
  Pickle q;  // STACK_GLOBAL (protocol 4) is checked the same way
  q.str("builtins").str("eval").op('\x93');
  msg = dict_error(dir, make_archive(q.done(), {}));
  EXPECT_TRUE(contains(msg, "builtins.eval")) << msg;
  Pickle r;
  r.global("torch._utils", "_rebuild_parameter");
  EXPECT_TRUE(contains(dict_error(dir, make_archive(r.done(), {})), "_rebuild_parameter"));
  Pickle s;
  s.global("torch", "FloatTensor");
  EXPECT_TRUE(contains(dict_error(dir, make_archive(s.done(), {})), "torch.FloatTensor"));
}

TEST(TorchArchive, CompressedEntryIsRejected) {
  const std::string dir = t::scratch_dir("torch_archive_compressed");
  Pickle p;
  p.tensor("ByteStorage", "0", 3, 0, {3}, {1});
  std::vector<ZipItem> items{{"archive/data.pkl", p.done(), 8}, {"archive/data/0", "abc"}};
  std::string msg = tensor_error(dir, build_zip(items));
  EXPECT_TRUE(contains(msg, "compressed")) << msg;
  EXPECT_TRUE(contains(msg, "archive/data.pkl")) << msg;
  items[0].method = 0;
  items[1].method = 8;
  msg = tensor_error(dir, build_zip(items));
  EXPECT_TRUE(contains(msg, "archive/data/0")) << msg;
  items[1].method = 0;
  EXPECT_EQ(tensor_error(dir, build_zip(items)), "");
}

TEST(TorchArchive, StructuralProblemsAreClearErrors) {
  const std::string dir = t::scratch_dir("torch_archive_structure");
  Pickle ok;
  ok.tensor("FloatStorage", "0", 4, 0, {2, 2}, {2, 1});
  const std::string data = float_bytes({1, 2, 3, 4});
  ASSERT_EQ(tensor_error(dir, make_archive(ok.done(), {{"0", data}})), "");

  EXPECT_TRUE(contains(tensor_error(dir, make_archive(ok.done(), {})), "missing"));
  EXPECT_TRUE(contains(tensor_error(dir, make_archive(ok.done(), {{"0", data + "x"}})), "expected 16"));
  ZipOptions bad_crc;
  bad_crc.bad_crc = true;
  EXPECT_TRUE(contains(tensor_error(dir, make_archive(ok.done(), {{"0", data}}, "archive", bad_crc)), "CRC"));
  // byteorder other than little.
  std::vector<ZipItem> items{{"archive/data.pkl", ok.done()}, {"archive/byteorder", "big"}, {"archive/data/0", data}};
  EXPECT_TRUE(contains(tensor_error(dir, build_zip(items)), "byteorder"));
  items[1].data = "little";
  EXPECT_EQ(tensor_error(dir, build_zip(items)), "");
  // No data.pkl, two data.pkl, a duplicate entry, a bad version record.
  EXPECT_TRUE(contains(tensor_error(dir, build_zip({{"archive/data/0", data}})), "data.pkl"));
  EXPECT_NE(tensor_error(dir, build_zip({{"a/data.pkl", ok.done()}, {"b/data.pkl", ok.done()}})), "");
  EXPECT_TRUE(contains(tensor_error(dir, build_zip({{"archive/data.pkl", ok.done()}, {"archive/data.pkl", ok.done()}})),
                       "duplicate"));
  EXPECT_NE(tensor_error(dir, build_zip({{"archive/data.pkl", ok.done()}, {"archive/data/0", data},
                                         {"archive/version", "three"}})),
            "");
  // Not a zip at all, or the legacy (pre-1.6) format which is a bare pickle stream.
  EXPECT_TRUE(contains(tensor_error(dir, B("\x80\x02\x8a\x0a") + std::string(200, 'x')),
                       "end-of-central-directory"));
  EXPECT_NE(tensor_error(dir, ""), "");
  // A missing file is NotFound and names the path.
  try {
    flashvsr::io::read_torch_tensor(dir + "/absent.pt");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::NotFound);
    EXPECT_TRUE(contains(e.what(), dir + "/absent.pt")) << e.what();
  }
  EXPECT_THROW(flashvsr::io::read_torch_state_dict(dir), Error);
}

TEST(TorchArchive, TensorViewsOutsideTheirStorageAreRejected) {
  const std::string dir = t::scratch_dir("torch_archive_bounds");
  const std::string data = float_bytes({1, 2, 3, 4, 5, 6});
  auto one = [&](int64_t offset, const std::vector<int64_t>& size, const std::vector<int64_t>& stride,
                 int64_t numel = 6) {
    Pickle p;
    p.tensor("FloatStorage", "0", numel, offset, size, stride);
    return tensor_error(dir, make_archive(p.done(), {{"0", data}}));
  };
  EXPECT_EQ(one(0, {2, 3}, {3, 1}), "");
  EXPECT_EQ(one(5, {1}, {1}), "");
  std::string msg = one(1, {2, 3}, {3, 1});
  EXPECT_TRUE(contains(msg, "past the storage")) << msg;
  EXPECT_TRUE(contains(msg, "[2, 3]")) << msg;
  EXPECT_NE(one(0, {3, 3}, {3, 1}), "");
  EXPECT_NE(one(0, {2, 3}, {4, 1}), "");
  EXPECT_NE(one(6, {1}, {1}), "");
  EXPECT_NE(one(7, {0}, {1}), "");                      // empty, but starts past the end
  EXPECT_NE(one(-1, {1}, {1}), "");                     // negative offset
  EXPECT_NE(one(0, {-1}, {1}), "");                     // negative size
  EXPECT_NE(one(0, {2}, {-1}), "");                     // negative stride
  EXPECT_NE(one(0, {2, 3}, {3}), "");                   // rank mismatch
  EXPECT_NE(one(0, {65536, 65536, 65536, 65536}, {0, 0, 0, 0}), "");  // overflowing numel
  EXPECT_NE(one(0, {2, 1 << 30}, {1 << 30, 1 << 30}), "");          // far past the storage
  EXPECT_NE(one(0, {6}, {1}, 5), "");  // numel disagrees with the record size
  EXPECT_NE(one(0, {6}, {1}, -1), "");
  // A stride-0 view is legal, but may not expand far beyond what the file holds.
  msg = one(0, {1 << 30, 1 << 30}, {0, 0});
  EXPECT_TRUE(contains(msg, "bytes")) << msg;
}

TEST(TorchArchive, MalformedPicklesAreRejected) {
  const std::string dir = t::scratch_dir("torch_archive_pickles");
  const std::string data = float_bytes({1, 2});
  auto dict = [&](const std::string& pickle) { return dict_error(dir, make_archive(pickle, {{"0", data}})); };
  EXPECT_NE(dict(B("\x80\x02}")), "");                     // no STOP
  EXPECT_NE(dict(B("\x80\x06}.")), "");                    // protocol 6
  EXPECT_NE(dict(B("\x80\x02.")), "");                     // empty stack
  EXPECT_NE(dict(B("\x80\x02t.")), "");                    // TUPLE without MARK
  EXPECT_NE(dict(B("\x80\x02h\x05.")), "");                // memo key never stored
  EXPECT_NE(dict(B("\x80\x02(s.")), "");                   // SETITEM across a MARK
  EXPECT_NE(dict(B("\x80\x02]K\x01K\x02s.")), "");         // SETITEM on a list
  EXPECT_NE(dict(B("\x80\x02}(K\x01u.")), "");             // SETITEMS with an odd count
  EXPECT_NE(dict(B("\x80\x02X\xff\xff\xff\x7f.")), "");    // string longer than the pickle
  EXPECT_NE(dict(B("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff.")), "");
  EXPECT_NE(dict(B("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.")), "");  // 9-byte long
  EXPECT_NE(dict(B("\x80\x02" "cos")), "");                   // unterminated GLOBAL
  EXPECT_NE(dict(B("\x80\x02\xff.")), "");                 // unknown opcode
  EXPECT_NE(dict(B("\x80\x02K\x01\x85Q.")), "");          // persistent id that is no storage tuple
  EXPECT_NE(dict(B("\x80\x02}K\x01K\x02s.")), "");         // dict with a non-string key
  EXPECT_NE(dict(B("\x80\x02}X\x01\x00\x00\x00" "aK\x02s.")), "");  // value that is not a tensor
  EXPECT_NE(dict(Pickle().ordered_dict().op('K').op('\x01').op('\x85').op('R').done()), "");  // call an OrderedDict
  // Deep MARK nesting and long stacks are bounded.
  EXPECT_NE(dict(B("\x80\x02") + std::string(100000, '(') + "."), "");
  EXPECT_NE(dict(B("\x80\x02") + std::string(2000000, 'N') + "."), "");
  // A list that contains itself is fine to build (no leak, no recursion) but is not a state dict.
  EXPECT_NE(dict(B("\x80\x02]q\x00h\x00a.")), "");
  // Mixed storage types under one key are refused.
  Pickle p;
  p.op('}').op('(').str("a").tensor("FloatStorage", "0", 2, 0, {2}, {1});
  p.str("b").tensor("IntStorage", "0", 2, 0, {2}, {1}).op('u');
  EXPECT_NE(dict(p.done()), "");
}

TEST(TorchArchive, ReadsProtocol4Opcodes) {
  const std::string dir = t::scratch_dir("torch_archive_proto4");
  // FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, LONG1, BININT1/2, TUPLE2 (BINGET is in every fixture).
  std::string b = B("\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00");
  b += B("\x8c\x0c") + "torch._utils" + "\x94";                 // memo 0
  b += B("\x8c\x12") + "_rebuild_tensor_v2" + "\x94\x93\x94";  // memo 1, global -> memo 2
  b += "((";
  b += B("\x8c\x07") + "storage" + "\x94";                               // memo 3
  b += B("\x8c\x05") + "torch" + B("\x8c\x0b") + "LongStorage" + "\x93";
  b += B("\x8c\x01") + "0" + B("\x8c\x03") + "cpu" + B("\x8a\x01\x06") + "t";
  b += "Q";
  b += B("K\x00") + B("K\x02K\x03\x86") + B("M\x03\x00K\x01\x86");
  b += "\x89";
  b += B("\x8c\x0b") + "collections" + B("\x8c\x0b") + "OrderedDict" + "\x93)R";
  b += "tR.";
  std::vector<int64_t> v{1, -2, 3, 1LL << 40, 5, 6};
  const std::string data(reinterpret_cast<const char*>(v.data()), v.size() * 8);
  const std::string path = dir + "/x.pt";
  t::write_file(path, make_archive(b, {{"0", data}}));
  const at::Tensor x = flashvsr::io::read_torch_tensor(path);
  EXPECT_TRUE(at::equal(x, at::tensor(v).reshape({2, 3})));
}

// ---------------------------------------------------------------------------------------------------------------
// Robustness: truncation and corruption must end in flashvsr::Error, never a crash.

TEST(TorchArchive, TruncationAtManyCutPointsIsAnError) {
  const std::string dir = t::scratch_dir("torch_archive_truncated");
  TensorMap in;
  in["w"] = at::randn({5, 3});
  in["b"] = at::arange(4, at::kLong);
  flashvsr::io::write_torch_state_dict(dir + "/full.pt", in);
  const std::string full = t::read_file(dir + "/full.pt");
  for (size_t cut = 0; cut < full.size(); ++cut)
    EXPECT_NE(dict_error(dir, full.substr(0, cut)), "") << "cut " << cut;
  const std::string fixture = t::read_file(fixture_model(t::vendored_fixture(), "TCDecoder.ckpt"));
  for (size_t i = 0; i < 150; ++i) {
    const size_t cut = fixture.size() * i / 150 + i;  // spread over the file, including the directory tail
    EXPECT_NE(dict_error(dir, fixture.substr(0, std::min(cut, fixture.size() - 1))), "") << "cut " << cut;
  }
  for (size_t back = 1; back < 200; ++back)
    EXPECT_NE(dict_error(dir, fixture.substr(0, fixture.size() - back)), "") << "back " << back;
}

TEST(TorchArchive, CorruptedBytesNeverCrash) {
  const std::string dir = t::scratch_dir("torch_archive_corrupt");
  TensorMap in;
  in["w"] = at::randn({3, 2});
  in["m"] = at::ones({2}, at::kBool);
  flashvsr::io::write_torch_state_dict(dir + "/full.pt", in);
  const std::string full = t::read_file(dir + "/full.pt");
  std::mt19937 rng(5);
  int ok = 0, rejected = 0;
  for (size_t pos = 0; pos < full.size(); ++pos) {
    for (unsigned char value : {static_cast<unsigned char>(full[pos] ^ 0xFF), static_cast<unsigned char>(rng())}) {
      std::string bytes = full;
      bytes[pos] = static_cast<char>(value);
      (dict_error(dir, bytes).empty() ? ok : rejected)++;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(ok, 0);  // e.g. the alignment padding and unused header fields
  // The fixture: flip bytes all over the file, more densely in the directory at the end.
  const std::string fixture = t::read_file(fixture_model(t::vendored_fixture(), "LQ_proj_in.ckpt"));
  for (int i = 0; i < 300; ++i) {
    std::string bytes = fixture;
    const size_t pos = i < 150 ? rng() % bytes.size() : bytes.size() - 1 - rng() % 2000;
    bytes[pos] = static_cast<char>(bytes[pos] ^ (1 + rng() % 255));
    dict_error(dir, bytes);
  }
}

TEST(TorchArchive, CorruptedPickleWithValidChecksumNeverCrashes) {
  const std::string dir = t::scratch_dir("torch_archive_pickle_fuzz");
  TensorMap in;
  in["a"] = at::arange(6, at::kFloat).reshape({2, 3});
  in["b"] = at::ones({2}, at::kBFloat16);
  flashvsr::io::write_torch_state_dict(dir + "/full.pt", in);
  const auto entries = walk_local_headers(t::read_file(dir + "/full.pt"));
  ASSERT_EQ(entries.size(), 5u);
  const std::string pickle = entries[0].data;
  std::map<std::string, std::string> storages{{"0", entries[2].data}, {"1", entries[3].data}};
  ASSERT_EQ(dict_error(dir, make_archive(pickle, storages)), "");
  std::mt19937 rng(17);
  int ok = 0, rejected = 0;
  const std::string interesting = B("\x00\x01\x02\xff()tsuqhjrRbQ.NKMJX\x85\x86\x87\x89\x8a\x93\x94\x95}]");
  for (size_t pos = 0; pos < pickle.size(); ++pos) {
    for (int k = 0; k < 3; ++k) {
      std::string p = pickle;
      p[pos] = k == 0 ? static_cast<char>(p[pos] ^ 0x80) : interesting[rng() % interesting.size()];
      (dict_error(dir, make_archive(p, storages)).empty() ? ok : rejected)++;
    }
  }
  for (int iter = 0; iter < 2000; ++iter) {  // multi-byte edits: deletions, duplications, random opcodes
    std::string p = pickle;
    for (int k = 0; k < 3; ++k) {
      size_t pos = rng() % p.size();
      switch (rng() % 3) {
        case 0: p.erase(pos, 1 + rng() % 6); break;
        case 1: p.insert(pos, p.substr(rng() % p.size(), 1 + rng() % 12)); break;
        case 2: p[pos] = interesting[rng() % interesting.size()]; break;
      }
      if (p.empty()) p = ".";
    }
    (dict_error(dir, make_archive(p, storages)).empty() ? ok : rejected)++;
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(ok, 0);
}

// ---------------------------------------------------------------------------------------------------------------
// Interop with Python's torch (skipped when there is none).

TEST(TorchArchive, PythonTorchLoadReadsOurArchives) {
  const std::string py = t::python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python with torch";
  const std::string dir = t::scratch_dir("torch_archive_py_load");
  const TensorMap in = sample_tensors();
  flashvsr::io::write_torch_state_dict(dir + "/sd.pt", in, true);
  flashvsr::io::write_torch_state_dict(dir + "/plain.pt", in, false);
  flashvsr::io::write_torch_tensor(dir + "/one.pt", in.at("transposed"));
  flashvsr::io::write_safetensors(dir + "/ref.safetensors", in);
  const std::string body = R"PY(
d = sys.argv[1]
ref = load(d + '/ref.safetensors')
sd = torch.load(d + '/sd.pt', weights_only=True)
plain = torch.load(d + '/plain.pt', weights_only=True)
one = torch.load(d + '/one.pt', weights_only=True)
assert type(sd) is collections.OrderedDict, type(sd)
assert sd._metadata == {'': {'version': 1}}, sd._metadata
assert type(plain) is dict, type(plain)
for obj in (sd, plain):
    assert list(obj.keys()) == sorted(ref.keys()), (list(obj.keys()), sorted(ref.keys()))
    for k, x in ref.items():
        y = obj[k]
        assert y.dtype == x.dtype and y.shape == x.shape and torch.equal(x, y), k
assert torch.equal(one, ref['transposed']) and one.dtype == torch.float32
print('OK')
)PY";
  std::string out;
  EXPECT_EQ(run_python(py, dir, body, "'" + dir + "'", &out), 0) << out;
  EXPECT_TRUE(contains(out, "OK")) << out;
  // Our state dict loads into an nn.Module through load_state_dict.
  TensorMap lin;
  lin["weight"] = at::randn({2, 3});
  lin["bias"] = at::randn({2});
  flashvsr::io::write_torch_state_dict(dir + "/linear.pt", lin);
  flashvsr::io::write_safetensors(dir + "/linear.safetensors", lin);
  const std::string body2 = R"PY(
d = sys.argv[1]
m = torch.nn.Linear(3, 2)
m.load_state_dict(torch.load(d + '/linear.pt', weights_only=True))
ref = load(d + '/linear.safetensors')
assert torch.equal(m.weight.detach(), ref['weight']) and torch.equal(m.bias.detach(), ref['bias'])
print('OK')
)PY";
  EXPECT_EQ(run_python(py, dir, body2, "'" + dir + "'", &out), 0) << out;
}

TEST(TorchArchive, ReadsArchivesSavedByPythonTorch) {
  const std::string py = t::python_with_torch();
  if (py.empty()) GTEST_SKIP() << "no python with torch";
  const std::string dir = t::scratch_dir("torch_archive_py_save");
  const std::string body = R"PY(
d = sys.argv[1]
torch.manual_seed(3)
plain = {
    'f32': torch.randn(3, 4), 'f64': torch.randn(5, dtype=torch.float64), 'f16': torch.randn(2, 2).half(),
    'bf16': torch.randn(6).bfloat16(), 'i64': torch.tensor([1 << 40, -7, 0]), 'i32': torch.tensor([5, -6], dtype=torch.int32),
    'i16': torch.tensor([300, -3], dtype=torch.int16), 'i8': torch.tensor([-128, 127], dtype=torch.int8),
    'u8': torch.tensor([0, 255], dtype=torch.uint8), 'bool': torch.tensor([True, False, True]),
    'scalar': torch.tensor(1.25), 'empty': torch.zeros(0, 3),
}
torch.save(plain, d + '/plain.pt')
dump(d + '/plain.safetensors', plain)
module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2))
sd = module.state_dict()
torch.save(sd, d + '/module.pt')
dump(d + '/module.safetensors', sd)
base = torch.arange(100, dtype=torch.float32)
views = {'whole': base, 'slice': base[10:30].view(4, 5), 'transposed': base.view(10, 10).t()[2:5, 1:7],
         'step': base[3::7], 'tail': base[95:]}
torch.save(views, d + '/views.pt')
dump(d + '/views.safetensors', views)
torch.save(base.view(10, 10)[1:4, ::3], d + '/one_view.pt')
dump(d + '/one_view.safetensors', {'tensor': base.view(10, 10)[1:4, ::3]})
torch.save(plain, d + '/proto4.pt', pickle_protocol=4)
print('OK')
)PY";
  std::string out;
  ASSERT_EQ(run_python(py, dir, body, "'" + dir + "'", &out), 0) << out;
  for (const char* name : {"plain", "module", "views"}) {
    SCOPED_TRACE(name);
    expect_same(flashvsr::io::read_safetensors(dir + "/" + name + ".safetensors"),
                flashvsr::io::read_torch_state_dict(dir + "/" + name + ".pt"));
  }
  expect_same(flashvsr::io::read_safetensors(dir + "/plain.safetensors"),
              flashvsr::io::read_torch_state_dict(dir + "/proto4.pt"));
  expect_same(flashvsr::io::read_safetensors(dir + "/one_view.safetensors"),
              {{"tensor", flashvsr::io::read_torch_tensor(dir + "/one_view.pt")}});
  const TensorMap module = flashvsr::io::read_torch_state_dict(dir + "/module.pt");
  EXPECT_TRUE(module.count("1.num_batches_tracked"));
  EXPECT_TRUE(module.count("0.weight"));
}
