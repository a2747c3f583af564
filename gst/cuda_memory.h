// SPDX-License-Identifier: LGPL-2.1-or-later
// Video in CUDA memory (gst-plugins-bad's GstCudaMemory, library gstreamer-cuda-1.0) for the flashvsr
// element, built only with FLASHVSR_GST_CUDA (gst/meson.build): the CUDA context the element shares with
// its neighbours (a GstCudaContext wrapping the primary context of the device LibTorch runs on, so that
// LibTorch can use every allocation made in it), the buffer pools of CUDA caps, and the frame copies
// between mapped CUDA planes (device pointers viewed as strided LibTorch tensors, no copy to wrap them)
// and the engine's packed layout on the device: one device-to-device copy per plane, no host copy.
//
// GStreamer 1.22's GstCudaMemory carries no CUDA stream: a buffer's contents are complete when it is
// pushed. The copies therefore run on LibTorch's current stream and are waited for (a CUDA event on that
// stream, covering the copy only: the engine's own work is already waited for per chunk) before the
// input buffer is released or the output buffer is pushed.
#pragma once

#ifdef FLASHVSR_GST_CUDA

#include "frame_format.h"

#include <ATen/ATen.h>
#include <gst/cuda/gstcudabufferpool.h>
#include <gst/cuda/gstcudacontext.h>
#include <gst/cuda/gstcudamemory.h>
#include <gst/cuda/gstcudautils.h>
#include <gst/video/video.h>

#include <string>

namespace gstflashvsr {

// A GstCudaContext of the primary context of CUDA device `device_index` (the one LibTorch uses), or null
// with `error` saying why (no CUDA driver, no such device).
GstCudaContext* new_torch_cuda_context(int device_index, std::string* error);
// The CUDA device of `context`.
int cuda_context_device(GstCudaContext* context);
// Whether `context` is the primary context of its device, i.e. memory allocated in it is usable by
// LibTorch.
bool is_torch_cuda_context(GstCudaContext* context);

// The CUDA device of the context that `pad`'s peer answers a context query with; -1 when it has none.
int peer_cuda_device(GstPad* pad);

// Whether `buffer`'s memory is GstCudaMemory.
bool is_cuda_buffer(GstBuffer* buffer);
// Why LibTorch on CUDA device `device_index` cannot use `buffer`'s CUDA memory ("" when it can): memory
// of another device, or of a CUDA context other than the device's primary one.
std::string cuda_buffer_refusal(GstBuffer* buffer, int device_index);

// Whether LibTorch on `device` can read and write `buffer`'s CUDA memory in place (CUDA memory of that
// device's primary context); other buffers are mapped to the host.
bool is_torch_cuda_buffer(GstBuffer* buffer, at::Device device);

// A GstCudaBufferPool of `context` for `caps` (min..max buffers, GstVideoMeta on), configured; `size`
// takes the pool's buffer size. Null when the pool refuses the configuration.
GstBufferPool* new_cuda_pool(GstCudaContext* context, GstCaps* caps, guint* size, guint min, guint max);

// The planes of `buffer` (CUDA memory of video `info`, on `device`) -> packed uint8 [1, layout.size] on
// `device`. Throws flashvsr::Error(BadInput) when the buffer cannot be mapped.
at::Tensor read_cuda_frame(GstBuffer* buffer, const GstVideoInfo& info, const flashvsr::PlaneLayout& layout,
                           at::Device device);
// packed: uint8 [layout.size] on the buffer's device -> the planes of `buffer` (CUDA memory of video
// `info`). False when the buffer cannot be mapped.
bool write_cuda_frame(const at::Tensor& packed, const flashvsr::PlaneLayout& layout, GstBuffer* buffer,
                      const GstVideoInfo& info);

}  // namespace gstflashvsr

#endif  // FLASHVSR_GST_CUDA
