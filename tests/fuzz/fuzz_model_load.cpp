// SPDX-License-Identifier: LGPL-2.1-or-later
// libFuzzer target: binding a DiT checkpoint to the engine (Model::load).
// A small random model (fuzz_model_spec(): ModelSpec::tiny() cut down, see fuzz_model_spec.h) is written
// once into a private directory; each input replaces its DiT file (diffusion_pytorch_model_streaming_dmd.safetensors) and the directory is loaded. Loading
// must either throw flashvsr::Error (or c10::Error) or give a model consistent with the fixed files: a DiT
// of the LQ projection's width with at least as many blocks as it has linear layers, and a text width
// equal to the prompt's.
// Inputs are multi-megabyte files whose JSON header is a few kilobytes, so a custom mutator spends most
// mutations on the header alone (keeping the tensor bytes and fixing up the 8-byte length).
#include "engine.h"
#include "io/file_util.h"
#include "fuzz_model_spec.h"
#include "fuzz_support.h"
#include "model_maker.h"
#include "weights.h"

#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <cstdlib>

using namespace flashvsr;
using namespace flashvsr::io;

namespace {

std::string g_model_dir;
ModelSpec g_spec;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  c10::InferenceMode guard;
  g_spec = fuzz::fuzz_model_spec();
  g_model_dir = fuzz::make_temp_dir("model");
  try {
    // The fixed files in BF16 to keep them small; the loader converts to its compute dtype anyway.
    write_model_dir(g_model_dir, make_random_model(g_spec, 1, at::kBFloat16));
    // The directory as written must load, or every input would be rejected for the wrong reason.
    Model::load(g_model_dir, LoadOptions{});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz harness failure: the generated model does not load: %s\n", e.what());
    std::abort();
  }
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  return fuzz::mutate_safetensors(data, size, max_size, seed, 9);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::write_file_or_die(join_path(g_model_dir, ReleaseLayout::kDit), data, size);
  LoadOptions options;
  size_t warnings = 0;
  options.log = [&](LogLevel, const std::string& message) { warnings += message.empty() ? 0 : 1; };
  std::shared_ptr<const Model> model;
  if (!fuzz::accepts("Model::load", [&] { model = Model::load(g_model_dir, options); })) return 0;

  if (!model) fuzz::finding("Model::load returned no model and threw nothing");
  const ModelConfig& c = model->config();
  if (c.dit.dim != g_spec.dim || c.lq_proj.out_dim != g_spec.dim)
    fuzz::finding("loaded a DiT of dim " + std::to_string(c.dit.dim) + " beside an LQ projection of width " +
                  std::to_string(c.lq_proj.out_dim));
  if (c.dit.layers < c.lq_proj.num_linear) fuzz::finding("loaded a DiT with fewer blocks than LQ linear layers");
  if (c.dit.text_dim != g_spec.text_dim || c.context_len != g_spec.context_len)
    fuzz::finding("loaded a DiT whose text width does not match the prompt");
  if (c.dit.heads * c.dit.head_dim != c.dit.dim) fuzz::finding("heads x head_dim != dim");
  return 0;
}
