// SPDX-License-Identifier: LGPL-2.1-or-later
// The raw video the flashvsr element takes and makes, in one place: the formats of its pads and their
// engine layouts (flashvsr::PixelFormat), the size limit, the template caps, the YUV matrix, range and
// chroma siting of caps as the engine's YuvSpec, and the plane copies between a mapped GstVideoFrame
// (any strides and plane offsets) and the engine's packed layout (planes back to back, tight rows;
// model/frame_format.h). The element tests use these too.
#pragma once

#include "engine.h"
#include "frame_format.h"

#include <gst/video/video.h>

#include <cstdint>
#include <optional>

namespace gstflashvsr {

// The largest width and height on either pad: the engine's limit on output frames (a larger input could
// only be scaled down, which the element does not do).
constexpr gint kMaxSide = static_cast<gint>(flashvsr::kMaxFrameSide);

// The engine layout of a format of the pads, nullopt for any other format.
std::optional<flashvsr::PixelFormat> pixel_format_of(GstVideoFormat format);

// Whether this build offers video in CUDA memory (gst-plugins-bad's GstCudaMemory, gst/cuda_memory.h),
// and its caps feature.
#ifdef FLASHVSR_GST_CUDA
constexpr bool kHaveCudaMemory = true;
#else
constexpr bool kHaveCudaMemory = false;
#endif
constexpr const char* kCudaMemoryFeature = "memory:CUDAMemory";

// The caps of both pad templates: video/x-raw in CUDA memory (when kHaveCudaMemory), then in system
// memory, every supported format, 1..kMaxSide, any framerate, progressive.
GstCaps* template_caps();
// Sets `s`'s "format" field to the list of supported formats.
void set_format_list(GstStructure* s);

// gst_video_info_from_caps, keeping an explicit chroma-site (before GStreamer 1.26 it is replaced by the
// default for the height when the caps carry no colorimetry).
gboolean video_info_from_caps(GstVideoInfo* info, const GstCaps* caps);

// The Y'CbCr matrix, range and chroma siting of YUV video (any value for RGB formats); nullopt for what
// the engine does not implement (other matrices, alternate-line sitings). Unknown values get GStreamer's
// defaults for the frame height.
std::optional<flashvsr::YuvSpec> yuv_spec_of(const GstVideoInfo* info);

// Why the element cannot convert video of `info` ("" when it can): interlaced, another format, or a
// matrix, range or chroma siting the engine does not implement.
const char* unsupported_reason(const GstVideoInfo* info);

// The engine layout of a frame of `info` (a supported format).
flashvsr::PlaneLayout layout_of(const GstVideoInfo* info);

// Whether the mapped frame's planes already are the packed layout: back to back from plane 0 at the
// layout's offsets, with tight strides (then one copy moves the whole frame).
bool is_packed(const GstVideoFrame* frame, const flashvsr::PlaneLayout& layout);

// Copies a mapped frame's planes into `packed` (layout.size bytes), honouring the frame's strides.
void read_planes(const GstVideoFrame* frame, const flashvsr::PlaneLayout& layout, uint8_t* packed);
// Copies `packed` (layout.size bytes) into a mapped frame's planes, honouring the frame's strides.
void write_planes(const uint8_t* packed, const flashvsr::PlaneLayout& layout, GstVideoFrame* frame);

}  // namespace gstflashvsr
