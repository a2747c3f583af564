// SPDX-License-Identifier: LGPL-2.1-or-later
#include "cuda_memory.h"

#ifdef FLASHVSR_GST_CUDA

#include "error.h"

#include <c10/core/Event.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <gst/cuda/gstcudaloader.h>

#include <dlfcn.h>

namespace gstflashvsr {

namespace {

// cuDevicePrimaryCtxRetain / Release of the CUDA driver (not in gst-cuda's loader): looked up in the
// driver library gst-cuda loaded (gst_cuda_load_library), never linked, so that the plugin loads on
// machines without a CUDA driver.
using PrimaryRetain = CUresult (*)(CUcontext*, CUdevice);
using PrimaryRelease = CUresult (*)(CUdevice);

void* driver_symbol(const char* name) {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  return lib ? dlsym(lib, name) : nullptr;
}

// The handle of device `device`'s primary context (null without a driver). `keep`: the caller keeps the
// reference taken (see new_torch_cuda_context), else it is given back at once.
CUcontext primary_context(CUdevice device, bool keep) {
  auto retain = reinterpret_cast<PrimaryRetain>(driver_symbol("cuDevicePrimaryCtxRetain"));
  auto release = reinterpret_cast<PrimaryRelease>(driver_symbol("cuDevicePrimaryCtxRelease_v2"));
  if (!release) release = reinterpret_cast<PrimaryRelease>(driver_symbol("cuDevicePrimaryCtxRelease"));
  CUcontext ctx = nullptr;
  if (!retain || !release || retain(&ctx, device) != CUDA_SUCCESS) return nullptr;
  if (!keep) release(device);
  return ctx;
}

// Waits for the work queued so far on LibTorch's current stream of `device` (the plane copies).
void wait_for_copies(at::Device device) {
  c10::impl::VirtualGuardImpl guard(device.type());
  c10::Event done(device.type());
  done.record(guard.getStream(device));
  done.synchronize();
}

// Plane `p` of a mapped CUDA frame: uint8 [rows, row_bytes] with the frame's stride, on `device`.
at::Tensor plane_view(GstVideoFrame* frame, int p, const flashvsr::PlaneLayout& layout, at::Device device) {
  return at::from_blob(GST_VIDEO_FRAME_PLANE_DATA(frame, p), {layout.rows[p], layout.row_bytes[p]},
                       {GST_VIDEO_FRAME_PLANE_STRIDE(frame, p), 1},
                       at::TensorOptions().dtype(at::kByte).device(device));
}

// The video to map `buffer` of `info` with: `info` where the buffer has a GstVideoMeta (which
// gst_video_frame_map then follows), else with the strides and offsets of its CUDA memory (pitched rows),
// not the caps' defaults.
GstVideoInfo mapping_info(GstBuffer* buffer, const GstVideoInfo& info) {
  if (gst_buffer_get_video_meta(buffer) || gst_buffer_n_memory(buffer) != 1) return info;
  const GstVideoInfo& mem = GST_CUDA_MEMORY_CAST(gst_buffer_peek_memory(buffer, 0))->info;
  if (GST_VIDEO_INFO_FORMAT(&mem) != GST_VIDEO_INFO_FORMAT(&info) ||
      GST_VIDEO_INFO_WIDTH(&mem) != GST_VIDEO_INFO_WIDTH(&info) ||
      GST_VIDEO_INFO_HEIGHT(&mem) != GST_VIDEO_INFO_HEIGHT(&info))
    return info;
  GstVideoInfo out = info;
  for (guint p = 0; p < GST_VIDEO_INFO_N_PLANES(&info); ++p) {
    out.stride[p] = mem.stride[p];
    out.offset[p] = mem.offset[p];
  }
  out.size = mem.size;
  return out;
}

}  // namespace

GstCudaContext* new_torch_cuda_context(int device_index, std::string* error) {
  if (!gst_cuda_load_library()) {
    *error = "the CUDA driver library (libcuda.so.1) could not be loaded";
    return nullptr;
  }
  CUdevice device = 0;
  if (CuDeviceGet(&device, device_index) != CUDA_SUCCESS) {
    *error = "the CUDA driver has no device " + std::to_string(device_index);
    return nullptr;
  }
  // The reference taken stays with the GstCudaContext, which neighbours may hold beyond this element;
  // LibTorch keeps the primary context for the whole process anyway.
  CUcontext ctx = primary_context(device, /*keep=*/true);
  if (!ctx) {
    *error = "the primary context of CUDA device " + std::to_string(device_index) + " could not be retained";
    return nullptr;
  }
  GstCudaContext* context = gst_cuda_context_new_wrapped(ctx, device);
  if (!context) *error = "gst_cuda_context_new_wrapped failed for CUDA device " + std::to_string(device_index);
  return context;
}

int cuda_context_device(GstCudaContext* context) {
  guint device = 0;
  g_object_get(context, "cuda-device-id", &device, nullptr);
  return static_cast<int>(device);
}

bool is_torch_cuda_context(GstCudaContext* context) {
  CUdevice device = 0;
  if (CuDeviceGet(&device, cuda_context_device(context)) != CUDA_SUCCESS) return false;
  CUcontext primary = primary_context(device, /*keep=*/false);
  return primary && gst_cuda_context_get_handle(context) == primary;
}

int peer_cuda_device(GstPad* pad) {
  GstQuery* query = gst_query_new_context(GST_CUDA_CONTEXT_TYPE);
  int device = -1;
  GstContext* context = nullptr;
  if (gst_pad_peer_query(pad, query)) gst_query_parse_context(query, &context);
  if (context) {
    GstCudaContext* cuda = nullptr;
    guint id = 0;
    const GstStructure* s = gst_context_get_structure(context);
    if (gst_structure_get(s, GST_CUDA_CONTEXT_TYPE, GST_TYPE_CUDA_CONTEXT, &cuda, nullptr) && cuda) {
      device = cuda_context_device(cuda);
      gst_object_unref(cuda);
    } else if (gst_structure_get_uint(s, "cuda-device-id", &id)) {
      device = static_cast<int>(id);
    }
  }
  gst_query_unref(query);
  return device;
}

bool is_cuda_buffer(GstBuffer* buffer) {
  return gst_buffer_n_memory(buffer) > 0 && gst_is_cuda_memory(gst_buffer_peek_memory(buffer, 0));
}

std::string cuda_buffer_refusal(GstBuffer* buffer, int device_index) {
  for (guint i = 0; i < gst_buffer_n_memory(buffer); ++i) {
    GstMemory* mem = gst_buffer_peek_memory(buffer, i);
    if (!gst_is_cuda_memory(mem)) return "a buffer of CUDA caps holds system memory";
    GstCudaContext* context = GST_CUDA_MEMORY_CAST(mem)->context;
    const int device = cuda_context_device(context);
    if (device != device_index)
      return "the buffer's CUDA memory is on CUDA device " + std::to_string(device) + ", the element runs on cuda:" +
             std::to_string(device_index) + " (give both the same device: device=cuda:" + std::to_string(device) +
             ", or the upstream element's cuda-device-id=" + std::to_string(device_index) + ")";
    if (!is_torch_cuda_context(context))
      return "the buffer's CUDA memory belongs to a CUDA context other than the primary context of device " +
             std::to_string(device) + " (LibTorch's): let the CUDA elements share the flashvsr element's context "
             "(do not set another GstCudaContext on the pipeline)";
  }
  return "";
}

bool is_torch_cuda_buffer(GstBuffer* buffer, at::Device device) {
  return device.is_cuda() && is_cuda_buffer(buffer) &&
         cuda_buffer_refusal(buffer, device.has_index() ? device.index() : 0).empty();
}

GstBufferPool* new_cuda_pool(GstCudaContext* context, GstCaps* caps, guint* size, guint min, guint max) {
  GstBufferPool* pool = gst_cuda_buffer_pool_new(context);
  GstStructure* config = gst_buffer_pool_get_config(pool);
  gst_buffer_pool_config_set_params(config, caps, *size, min, max);
  gst_buffer_pool_config_add_option(config, GST_BUFFER_POOL_OPTION_VIDEO_META);
  if (!gst_buffer_pool_set_config(pool, config)) {
    gst_object_unref(pool);
    return nullptr;
  }
  // The pool may pad the planes (pitched allocation): its size is the one to announce.
  config = gst_buffer_pool_get_config(pool);
  gst_buffer_pool_config_get_params(config, nullptr, size, nullptr, nullptr);
  gst_structure_free(config);
  return pool;
}

at::Tensor read_cuda_frame(GstBuffer* buffer, const GstVideoInfo& info, const flashvsr::PlaneLayout& layout,
                           at::Device device) {
  GstVideoFrame frame;
  const GstVideoInfo map_info = mapping_info(buffer, info);
  if (!gst_video_frame_map(&frame, &map_info, buffer, static_cast<GstMapFlags>(GST_MAP_READ | GST_MAP_CUDA)))
    throw flashvsr::Error(flashvsr::Error::Kind::BadInput,
                          "could not map an input buffer's CUDA memory (" + std::to_string(gst_buffer_get_size(buffer)) +
                              " bytes) for " + GST_VIDEO_INFO_NAME(&info) + " " +
                              std::to_string(GST_VIDEO_INFO_WIDTH(&info)) + "x" +
                              std::to_string(GST_VIDEO_INFO_HEIGHT(&info)));
  try {
    c10::InferenceMode inference;
    // [1, layout.size] on the device: each plane's rows, tight, at the layout's offset.
    at::Tensor packed = at::empty({1, layout.size}, at::TensorOptions().dtype(at::kByte).device(device));
    for (int p = 0; p < layout.planes; ++p)
      packed[0]
          .narrow(0, layout.offset[p], layout.rows[p] * layout.row_bytes[p])
          .view({layout.rows[p], layout.row_bytes[p]})
          .copy_(plane_view(&frame, p, layout, device));
    // Upstream may reuse the memory once the buffer is released: the caller holds it (CudaInputHold).
    gst_video_frame_unmap(&frame);
    return packed;
  } catch (...) {
    gst_video_frame_unmap(&frame);
    throw;
  }
}

CudaInputHold::~CudaInputHold() {
  for (Held& h : held_) {
    h.done.synchronize();
    gst_buffer_unref(h.buffer);
  }
}

void CudaInputHold::hold(GstBuffer* buffer, at::Device device) {
  c10::impl::VirtualGuardImpl guard(device.type());
  held_.push_back(Held{gst_buffer_ref(buffer), c10::Event(device.type())});
  held_.back().done.record(guard.getStream(device));
  release_done();
  while (held_.size() > kMaxHeld) {
    held_.front().done.synchronize();
    gst_buffer_unref(held_.front().buffer);
    held_.pop_front();
  }
}

void CudaInputHold::release_done() {
  while (!held_.empty() && held_.front().done.query()) {
    gst_buffer_unref(held_.front().buffer);
    held_.pop_front();
  }
}

void CudaInputHold::release_all() {
  for (Held& h : held_) gst_buffer_unref(h.buffer);
  held_.clear();
}

bool write_cuda_frame(const at::Tensor& packed, const flashvsr::PlaneLayout& layout, GstBuffer* buffer,
                      const GstVideoInfo& info) {
  GstVideoFrame frame;
  const GstVideoInfo map_info = mapping_info(buffer, info);
  if (!gst_video_frame_map(&frame, &map_info, buffer, static_cast<GstMapFlags>(GST_MAP_WRITE | GST_MAP_CUDA)))
    return false;
  try {
    c10::InferenceMode inference;
    const at::Device device(at::kCUDA, cuda_context_device(GST_CUDA_MEMORY_CAST(gst_buffer_peek_memory(buffer, 0))->context));
    for (int p = 0; p < layout.planes; ++p)
      plane_view(&frame, p, layout, device)
          .copy_(packed.narrow(0, layout.offset[p], layout.rows[p] * layout.row_bytes[p])
                     .view({layout.rows[p], layout.row_bytes[p]}));
    // Downstream may read the memory on any stream once the buffer is pushed (no stream in 1.22's memory).
    wait_for_copies(device);
  } catch (...) {
    gst_video_frame_unmap(&frame);
    throw;
  }
  gst_video_frame_unmap(&frame);
  return true;
}

}  // namespace gstflashvsr

#endif  // FLASHVSR_GST_CUDA
