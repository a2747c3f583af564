// SPDX-License-Identifier: LGPL-2.1-or-later
#include "frame_window.h"

#include "cuda_memory.h"
#include "video_format.h"

#include "error.h"
#include "io/safetensors.h"

#include <c10/core/InferenceMode.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <chrono>
#include <string>

namespace gstflashvsr {

namespace {

// Buffer flags an output takes over from its input: all but GAP and TAG_MEMORY.
const guint kCarriedFlags = ~((guint)GST_MINI_OBJECT_FLAG_LAST - 1) &
                            ~((guint)GST_BUFFER_FLAG_GAP | (guint)GST_BUFFER_FLAG_TAG_MEMORY);

flashvsr::FrameConverter converter_for(const GstVideoInfo& info, at::Device device) {
  return flashvsr::FrameConverter(*pixel_format_of(GST_VIDEO_INFO_FORMAT(&info)), GST_VIDEO_INFO_WIDTH(&info),
                                  GST_VIDEO_INFO_HEIGHT(&info), *yuv_spec_of(&info), device);
}

// The noise of `noise_file`'s 'noise' tensor, F32 [1, 16, T, H/8, W/8] (throws Error naming the file when
// it has none, or too few latent frames for what the stream asks).
flashvsr::NoiseSource noise_from_file(const std::string& noise_file) {
  const flashvsr::TensorMap tensors = flashvsr::io::read_safetensors(noise_file);
  auto it = tensors.find("noise");
  if (it == tensors.end())
    throw flashvsr::Error(flashvsr::Error::Kind::BadFile,
                          noise_file + ": no tensor 'noise' (expected F32 [1, 16, T, H/8, W/8])");
  // A copy, never the reader's view of the file: the stream keeps it for its whole life (io/safetensors.h).
  const at::Tensor noise = it->second.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  return [noise, noise_file](int64_t first, int64_t count) {
    if (noise.dim() != 5 || first + count > noise.size(2))
      throw flashvsr::Error(flashvsr::Error::Kind::BadInput,
                            noise_file + ": tensor 'noise' has shape " + flashvsr::shape_string(noise.sizes().vec()) +
                                ", the stream needs latent frames up to " + std::to_string(first + count));
    return noise.narrow(2, first, count);
  };
}

// Blocks until the device has run everything queued (no-op on the CPU), so that a step's time includes
// the device's work, as a download would.
void wait_for_device(at::Device device) {
  if (device.is_cpu()) return;
  c10::impl::VirtualGuardImpl guard(device.type());
  guard.getStream(device).synchronize();
}

// The tiling of `spec`: as set, or with max_memory_gib > 0 and no tile size, the memory model's choice.
flashvsr::TileOptions tiling_for(const flashvsr::Model& model, const StreamSpec& spec) {
  if (spec.max_memory_gib <= 0.0 || spec.tiling.enabled()) return spec.tiling;
  return flashvsr::tiles_for_memory(spec.options, spec.tiling.overlap, spec.max_memory_gib,
                                    flashvsr::MemoryModel::measured(model.config(), spec.options, model.dtype()));
}

// The spec's stream options, with float output for a 10/16-bit output format.
flashvsr::StreamOptions stream_options(const StreamSpec& spec, const GstVideoInfo& out_info) {
  flashvsr::StreamOptions o = spec.options;
  o.float_output = flashvsr::bit_depth(*pixel_format_of(GST_VIDEO_INFO_FORMAT(&out_info))) > 8;
  return o;
}

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

// The planes of a system-memory `buffer` of `info`, into one tight host tensor (pinned for a fast upload
// to CUDA): uint8 [1, layout.size].
at::Tensor read_host_frame(GstBuffer* buffer, const GstVideoInfo& info, const flashvsr::PlaneLayout& layout,
                           at::Device device) {
  GstVideoFrame video;
  if (!gst_video_frame_map(&video, &info, buffer, GST_MAP_READ))
    throw flashvsr::Error(flashvsr::Error::Kind::BadInput,
                          "could not map an input buffer: " + std::to_string(gst_buffer_get_size(buffer)) +
                              "-byte buffer for " + GST_VIDEO_INFO_NAME(&info) + " " +
                              std::to_string(GST_VIDEO_INFO_WIDTH(&info)) + "x" +
                              std::to_string(GST_VIDEO_INFO_HEIGHT(&info)) + " (" +
                              std::to_string(GST_VIDEO_INFO_SIZE(&info)) + " bytes)");
  at::Tensor packed;
  try {
    packed = at::empty({1, layout.size}, at::TensorOptions().dtype(at::kByte).pinned_memory(device.is_cuda()));
  } catch (...) {
    gst_video_frame_unmap(&video);
    throw;
  }
  read_planes(&video, layout, packed.data_ptr<uint8_t>());
  gst_video_frame_unmap(&video);
  return packed;
}

}  // namespace

FrameMeta FrameMeta::of(GstBuffer* input) {
  FrameMeta m;
  m.pts = GST_BUFFER_PTS(input);
  m.duration = GST_BUFFER_DURATION(input);
  m.offset = GST_BUFFER_OFFSET(input);
  m.offset_end = GST_BUFFER_OFFSET_END(input);
  m.flags = GST_BUFFER_FLAGS(input) & kCarriedFlags;
  return m;
}

void FrameMeta::stamp(GstBuffer* output) const {
  GST_BUFFER_PTS(output) = pts;
  GST_BUFFER_DTS(output) = GST_CLOCK_TIME_NONE;
  GST_BUFFER_DURATION(output) = duration;
  GST_BUFFER_OFFSET(output) = offset;
  GST_BUFFER_OFFSET_END(output) = offset_end;
  GST_BUFFER_FLAG_UNSET(output, kCarriedFlags);
  GST_BUFFER_FLAG_SET(output, flags);
}

FrameWindow::FrameWindow(std::shared_ptr<const flashvsr::Model> model, const StreamSpec& spec,
                         const GstVideoInfo& in_info, const GstVideoInfo& out_info)
    : spec_(spec),
      stream_(model, stream_options(spec, out_info), tiling_for(*model, spec)),
      in_conv_(converter_for(in_info, model->device())),
      out_conv_(converter_for(out_info, model->device())),
      in_info_(in_info),
      out_info_(out_info),
      float_input_(flashvsr::bit_depth(in_conv_.format()) > 8) {
  if (!spec.noise_file.empty()) stream_.set_noise_source(noise_from_file(spec.noise_file));
}

size_t FrameWindow::frames_pending() const {
  return static_cast<size_t>(std::count_if(pending_.begin(), pending_.end(), [](const Pending& p) { return !p.event; }));
}

void FrameWindow::wait_for_engine() {
  wait_for_device(stream_.model().device());
#ifdef FLASHVSR_GST_CUDA
  input_hold_.release_all();  // the device is idle: every input copy is done
#endif
}

FrameWindow::Step FrameWindow::push(GstBuffer* input) {
  const auto start = std::chrono::steady_clock::now();
  c10::InferenceMode inference;
  Pending frame;
  frame.meta = FrameMeta::of(input);
  if (discont_next_) frame.meta.flags |= GST_BUFFER_FLAG_DISCONT;
  discont_next_ = false;

  const at::Device device = stream_.model().device();
  const flashvsr::PlaneLayout& layout = in_conv_.layout();
#ifdef FLASHVSR_GST_CUDA
  // CUDA memory LibTorch can use: the planes, gathered on the device into the packed layout.
  const bool cuda_input = is_torch_cuda_buffer(input, device);
  const at::Tensor packed = cuda_input ? read_cuda_frame(input, in_info_, layout, device)
                                       : read_host_frame(input, in_info_, layout, device);
  if (cuda_input) input_hold_.hold(input, device);  // until its copy is done; no wait here
#else
  const at::Tensor packed = read_host_frame(input, in_info_, layout, device);
#endif
  pending_.push_back(std::move(frame));

  Step step;
  const auto t0 = std::chrono::steady_clock::now();
  const flashvsr::PushResult result =
      float_input_ ? stream_.push_float(in_conv_.to_rgb_float(packed)) : stream_.push(in_conv_.to_rgb(packed));
  queue_outputs(result.frames);
  if (result.chunks > 0) {
    wait_for_engine();
    step.ms = elapsed_ms(t0);
  }
  step.frames_in = 1;
  step.frames_ready = result.frames.size(0);
  step.chunks = result.chunks;
  step.first_chunk = result.first_chunk && result.chunks == 1;
  step.busy_ms = elapsed_ms(start);
  return step;
}

bool FrameWindow::push_gap(GstEvent* gap) {
  if (pending_.empty()) return false;
  Pending p;
  p.event.reset(gap);
  pending_.push_back(std::move(p));
  return true;
}

std::optional<FrameWindow::Output> FrameWindow::pop() {
  if (ready_.empty()) return std::nullopt;
  Output out = std::move(ready_.front());
  ready_.pop_front();
  return out;
}

FrameWindow::Step FrameWindow::drain() {
  c10::InferenceMode inference;
  Step step;
  if (frames_in() > 0) {
    const auto t0 = std::chrono::steady_clock::now();
    const flashvsr::PushResult result = stream_.finish();
    queue_outputs(result.frames);
    if (result.chunks > 0) {
      wait_for_engine();
      step.ms = elapsed_ms(t0);
    }
    step.frames_ready = result.frames.size(0);
    step.chunks = result.chunks;
    // The tail's chunks include the padding: a first chunk's time is taken from pushes only.
    step.first_chunk = false;
  }
  // GAPs left behind (no frame followed them) go out after the frames.
  for (Pending& p : pending_)
    if (p.event) ready_.push_back(Output{std::move(p.event), {}, {}});
  pending_.clear();
  return step;
}

void FrameWindow::flush() {
  pending_.clear();
  ready_.clear();
  discont_next_ = true;
  stream_.reset();
}

void FrameWindow::release_gaps() {
  while (!pending_.empty() && pending_.front().event) {
    ready_.push_back(Output{std::move(pending_.front().event), {}, {}});
    pending_.pop_front();
  }
}

void FrameWindow::queue_outputs(const at::Tensor& rgb) {
  const int64_t m = rgb.size(0);
  // [m, H, W, 3] RGB (uint8, or float in [0, 255] for a deep output) -> [m, out size] in the output
  // layout, on the device.
  at::Tensor packed;
  if (m > 0) packed = (float_output() ? out_conv_.from_rgb_float(rgb) : out_conv_.from_rgb(rgb)).contiguous();
  for (int64_t i = 0; i < m; ++i) {
    release_gaps();
    if (pending_.empty())
      throw flashvsr::Error(flashvsr::Error::Kind::Internal, "the engine returned more frames than were pushed");
    ready_.push_back(Output{nullptr, pending_.front().meta, packed[i]});
    pending_.pop_front();
  }
  release_gaps();
}

bool FrameWindow::write(const Output& frame, GstBuffer* buffer) const {
#ifdef FLASHVSR_GST_CUDA
  if (is_torch_cuda_buffer(buffer, frame.packed.device())) {
    // CUDA memory: one device copy per plane, from the packed frame on the device.
    if (!write_cuda_frame(frame.packed, out_conv_.layout(), buffer, out_info_)) return false;
    frame.meta.stamp(buffer);
    return true;
  }
#endif
  GstVideoFrame video;
  if (!gst_video_frame_map(&video, &out_info_, buffer, GST_MAP_WRITE)) return false;
  const flashvsr::PlaneLayout& layout = out_conv_.layout();
  try {
    c10::InferenceMode inference;
    if (is_packed(&video, layout)) {
      // The buffer's planes are the packed layout: one copy, straight from the device (or host) frame.
      at::from_blob(GST_VIDEO_FRAME_PLANE_DATA(&video, 0), {layout.size}, at::kByte).copy_(frame.packed);
    } else if (frame.packed.is_cpu()) {
      write_planes(frame.packed.data_ptr<uint8_t>(), layout, &video);
    } else {
      // Other strides: a download into pinned memory, then one copy row by row.
      at::Tensor host = at::empty({layout.size}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
      host.copy_(frame.packed);
      write_planes(host.data_ptr<uint8_t>(), layout, &video);
    }
  } catch (...) {
    gst_video_frame_unmap(&video);
    throw;
  }
  gst_video_frame_unmap(&video);
  frame.meta.stamp(buffer);
  return true;
}

}  // namespace gstflashvsr
