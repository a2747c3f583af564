// SPDX-License-Identifier: LGPL-2.1-or-later
// Video in CUDA memory (gst-plugins-bad's GstCudaMemory, library gstreamer-cuda-1.0) for the flashvsr
// element, built only with FLASHVSR_GST_CUDA (gst/meson.build): the CUDA context the element shares with
// its neighbours (a GstCudaContext wrapping the primary context of the device LibTorch runs on, so that
// LibTorch can use every allocation made in it), the buffer pools of CUDA caps, and the frame copies
// between mapped CUDA planes (device pointers viewed as strided LibTorch tensors, no copy to wrap them)
// and the engine's packed layout on the device: one device-to-device copy per plane, no host copy.
//
// GStreamer 1.22's GstCudaMemory carries no CUDA stream: a buffer's contents are complete when it is
// pushed, and upstream may reuse an input's memory once it is released. The copies run on LibTorch's
// current stream. An input buffer is held (CudaInputHold) until a CUDA event recorded after its copy has
// completed, which the streaming thread polls and never waits for; an output buffer's copies are waited
// for (an event on that stream, covering the copy only) before it is pushed, since downstream may read it
// on any stream at once.
#pragma once

#ifdef FLASHVSR_GST_CUDA

#include "frame_format.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <gst/cuda/gstcudabufferpool.h>
#include <gst/cuda/gstcudacontext.h>
#include <gst/cuda/gstcudamemory.h>
#include <gst/cuda/gstcudautils.h>
#include <gst/video/video.h>

#include <deque>
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
// `device`, copied on LibTorch's current stream: the copy may still be reading the buffer when this
// returns (hold it with CudaInputHold). Throws flashvsr::Error(BadInput) when the buffer cannot be mapped.
at::Tensor read_cuda_frame(GstBuffer* buffer, const GstVideoInfo& info, const flashvsr::PlaneLayout& layout,
                           at::Device device);
// Input buffers whose CUDA memory a queued device copy (read_cuda_frame) may still read: each keeps a
// reference until the CUDA event recorded after its copy has completed. release_done() polls the events
// (cudaEventQuery: no wait), so the streaming thread never blocks on an input copy. Inputs are copied onto
// an idle or nearly idle stream (the engine's work is waited for per chunk), so one or two are held at a
// time; more than kMaxHeld means the device is far behind, and the oldest is waited for so that upstream's
// pool (a decoder's, often a handful of buffers) is not starved.
class CudaInputHold {
 public:
  static constexpr size_t kMaxHeld = 4;
  CudaInputHold() = default;
  CudaInputHold(const CudaInputHold&) = delete;
  CudaInputHold& operator=(const CudaInputHold&) = delete;
  // Waits for the copies still outstanding (teardown only) and releases their buffers.
  ~CudaInputHold();
  // Takes a reference to `buffer` until the work queued so far on LibTorch's current stream of `device`
  // (its copy) has completed; releases the inputs already done.
  void hold(GstBuffer* buffer, at::Device device);
  // Releases the inputs whose copies have completed.
  void release_done();
  // After a wait for the whole device: every copy has completed.
  void release_all();

 private:
  struct Held {
    GstBuffer* buffer;  // a reference of ours
    c10::Event done;    // recorded after its copy
  };
  std::deque<Held> held_;
};

// packed: uint8 [layout.size] on the buffer's device -> the planes of `buffer` (CUDA memory of video
// `info`). False when the buffer cannot be mapped.
bool write_cuda_frame(const at::Tensor& packed, const flashvsr::PlaneLayout& layout, GstBuffer* buffer,
                      const GstVideoInfo& info);

}  // namespace gstflashvsr

#endif  // FLASHVSR_GST_CUDA
