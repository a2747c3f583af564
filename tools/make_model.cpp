// SPDX-License-Identifier: LGPL-2.1-or-later
// flashvsr-make-model: writes a random-weight model directory in the release layout.
#include "cli.h"
#include "model_maker.h"

#include <c10/core/InferenceMode.h>

#include <cstdio>

using namespace flashvsr;

int main(int argc, char** argv) {
  const char* usage =
      "usage: flashvsr-make-model --out DIR [--preset tiny|full] [--variant tiny|full] [--seed S]\n"
      "                           [--dtype fp32|bf16|fp16]\n"
      "Writes a random-weight FlashVSR model in the release layout (file names, keys, shapes).\n"
      "--preset: the sizes. tiny: dim 256, 2 heads, 2 layers (seconds on a CPU); full: the released sizes\n"
      "(1.42 B DiT parameters). --variant: stage 3. tiny (default): TCDecoder.ckpt; full: Wan2.1_VAE.pth,\n"
      "the Wan2.1 VAE decoder (base width 8 beside --preset tiny, 96 as released beside --preset full).\n"
      "Its pictures are not meaningful: it exists for tests, benchmarks and demos.\n";
  try {
    cli::Args args(argc, argv, {"out", "preset", "variant", "seed", "dtype"}, {"help"});
    if (args.has("help")) {
      std::fputs(usage, stdout);
      return 0;
    }
    if (!args.has("out") || !args.positional().empty()) {
      std::fputs(usage, stderr);
      return 2;
    }
    c10::InferenceMode inference;
    const std::optional<Variant> variant = parse_variant(args.str("variant", "tiny"));
    const ModelSpec spec = ModelSpec::preset(args.str("preset", "tiny")).with_variant(variant.value_or(Variant::Tiny));
    const auto tensors = make_random_model(spec, static_cast<uint64_t>(args.integer("seed", 0)),
                                           parse_dtype(args.str("dtype", "fp32")));
    write_model_dir(args.str("out", ""), tensors);
    std::printf("wrote %s-size %s model to %s\n", args.str("preset", "tiny").c_str(), variant_name(spec.variant),
                args.str("out", "").c_str());
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "flashvsr-make-model: %s\n", e.what());
    return 1;
  }
}
