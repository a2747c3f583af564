// SPDX-License-Identifier: LGPL-2.1-or-later
// The model of the model-binding fuzz target (fuzz-model-load) and of its seeds (fuzz-make-seeds).
// ModelSpec::tiny() cut down further: the fuzzed DiT file is rewritten and reloaded for every input, and
// libFuzzer mutates whole files, so each megabyte costs executions. Every dimension the loader infers
// stays distinct from the others (dim 128 = one head, ffn 256, text width 16, 4 prompt tokens).
#pragma once

#include "model_maker.h"

namespace flashvsr::fuzz {

inline ModelSpec fuzz_model_spec() {
  ModelSpec s = ModelSpec::tiny();
  s.dim = 128;
  s.ffn_dim = 256;
  s.layers = 1;
  s.text_dim = 16;
  s.context_len = 4;
  s.lq_hidden1 = 8;
  s.lq_hidden2 = 12;
  s.lq_linear = 1;
  s.decoder_channels = {8, 8, 4, 4};
  return s;
}

}  // namespace flashvsr::fuzz
