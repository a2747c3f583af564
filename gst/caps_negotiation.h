// SPDX-License-Identifier: LGPL-2.1-or-later
// What the flashvsr element offers on one pad for caps on the other (GstBaseTransform's transform_caps
// and fixate_caps): the scaled size first, then any size (downstream may fix one: the engine resizes to
// it), every supported format; fixation to the scaled size and the input's format, framerate and pixel
// aspect ratio, with the colorimetry and chroma siting carried over (docs/element.md, Caps).
#pragma once

#include <gst/video/video.h>

namespace gstflashvsr {

// The size on the other pad for `size` on this one: the engine's scaled size (flashvsr::scaled_size) for
// sink -> src, its nearest inverse for src -> sink; clamped to 1..kMaxSide.
gint transform_dimension(GstPadDirection direction, gint size, double scale);

// Whether a structure of `caps` is in CUDA memory (memory:CUDAMemory).
bool has_cuda_memory(const GstCaps* caps);

// For each structure of `caps` in system memory (or, with `cuda`, in CUDA memory): the scaled size (when
// width and height are ints or ranges), then any size, every format, each in the input's memory first,
// then in the other one (CUDA memory only with `cuda`: the element runs on a CUDA device of a build with
// kHaveCudaMemory); structures in other memories are dropped (refused). Intersected with `filter`
// (GST_CAPS_INTERSECT_FIRST) when given.
GstCaps* transform_caps(GstPadDirection direction, GstCaps* caps, GstCaps* filter, double scale, bool cuda);

// Fixates `othercaps` (taken) for `caps` on the other pad: the structure that takes the scaled size and
// the input format, then format, size, framerate, pixel aspect ratio, colorimetry and chroma siting.
GstCaps* fixate_caps(GstPadDirection direction, GstCaps* caps, GstCaps* othercaps, double scale);

}  // namespace gstflashvsr
