// SPDX-License-Identifier: LGPL-2.1-or-later
#include "video_format.h"

#include <cstring>

namespace gstflashvsr {

namespace {

struct Format {
  GstVideoFormat gst;
  flashvsr::PixelFormat engine;
};

// The formats of both pads, in the template's order.
constexpr Format kFormats[] = {
    {GST_VIDEO_FORMAT_RGB, flashvsr::PixelFormat::RGB},   {GST_VIDEO_FORMAT_RGBx, flashvsr::PixelFormat::RGBx},
    {GST_VIDEO_FORMAT_BGRx, flashvsr::PixelFormat::BGRx}, {GST_VIDEO_FORMAT_RGBA, flashvsr::PixelFormat::RGBA},
    {GST_VIDEO_FORMAT_BGRA, flashvsr::PixelFormat::BGRA}, {GST_VIDEO_FORMAT_I420, flashvsr::PixelFormat::I420},
    {GST_VIDEO_FORMAT_NV12, flashvsr::PixelFormat::NV12},
    {GST_VIDEO_FORMAT_I420_10LE, flashvsr::PixelFormat::I420_10LE},
    {GST_VIDEO_FORMAT_P010_10LE, flashvsr::PixelFormat::P010_10LE},
    {GST_VIDEO_FORMAT_Y444_16LE, flashvsr::PixelFormat::Y444_16LE},
};

}  // namespace

std::optional<flashvsr::PixelFormat> pixel_format_of(GstVideoFormat format) {
  for (const Format& f : kFormats)
    if (f.gst == format) return f.engine;
  return std::nullopt;
}

void set_format_list(GstStructure* s) {
  GValue list = G_VALUE_INIT, item = G_VALUE_INIT;
  gst_value_list_init(&list, G_N_ELEMENTS(kFormats));
  g_value_init(&item, G_TYPE_STRING);
  for (const Format& f : kFormats) {
    g_value_set_string(&item, gst_video_format_to_string(f.gst));
    gst_value_list_append_value(&list, &item);
  }
  g_value_unset(&item);
  gst_structure_take_value(s, "format", &list);
}

GstCaps* template_caps() {
  GstCaps* caps = gst_caps_new_empty_simple("video/x-raw");
  GstStructure* s = gst_caps_get_structure(caps, 0);
  set_format_list(s);
  gst_structure_set(s, "width", GST_TYPE_INT_RANGE, 1, kMaxSide, "height", GST_TYPE_INT_RANGE, 1, kMaxSide,
                    "framerate", GST_TYPE_FRACTION_RANGE, 0, 1, G_MAXINT, 1, "interlace-mode", G_TYPE_STRING,
                    "progressive", nullptr);
  if (kHaveCudaMemory) {
    // The same video in CUDA memory, first: preferred where both sides can take it.
    GstCaps* cuda = gst_caps_copy(caps);
    gst_caps_set_features(cuda, 0, gst_caps_features_new(kCudaMemoryFeature, nullptr));
    caps = gst_caps_merge(cuda, caps);
  }
  return caps;
}

gboolean video_info_from_caps(GstVideoInfo* info, const GstCaps* caps) {
  if (!gst_video_info_from_caps(info, caps)) return FALSE;
  const gchar* site = gst_structure_get_string(gst_caps_get_structure(caps, 0), "chroma-site");
  if (site && GST_VIDEO_INFO_IS_YUV(info)) info->chroma_site = gst_video_chroma_site_from_string(site);
  return TRUE;
}

// An unknown matrix or range (caps that do not say) gets GStreamer's default for the frame height:
// BT.2020 from 2160 lines, BT.709 above 576, else BT.601; limited range. An unknown chroma siting gets the
// default of GStreamer's video-info.c (set_default_chroma_site since 1.26, set_default_colorimetry
// before): mpeg2 (horizontally co-sited) above 576 lines, else jpeg (centred). Other matrices (FCC, SMPTE
// 240M) and alternate-line sitings (ALT_LINE, dv) are not supported.
std::optional<flashvsr::YuvSpec> yuv_spec_of(const GstVideoInfo* info) {
  flashvsr::YuvSpec spec;
  if (!GST_VIDEO_INFO_IS_YUV(info)) return spec;
  const gint height = GST_VIDEO_INFO_HEIGHT(info);
  switch (info->colorimetry.matrix) {
    case GST_VIDEO_COLOR_MATRIX_BT601: spec.matrix = flashvsr::YuvMatrix::BT601; break;
    case GST_VIDEO_COLOR_MATRIX_BT709: spec.matrix = flashvsr::YuvMatrix::BT709; break;
    case GST_VIDEO_COLOR_MATRIX_BT2020: spec.matrix = flashvsr::YuvMatrix::BT2020; break;
    case GST_VIDEO_COLOR_MATRIX_UNKNOWN:
      spec.matrix = height >= 2160 ? flashvsr::YuvMatrix::BT2020
                    : height > 576 ? flashvsr::YuvMatrix::BT709
                                   : flashvsr::YuvMatrix::BT601;
      break;
    default: return std::nullopt;
  }
  switch (info->colorimetry.range) {
    case GST_VIDEO_COLOR_RANGE_0_255: spec.full_range = true; break;
    case GST_VIDEO_COLOR_RANGE_16_235:
    case GST_VIDEO_COLOR_RANGE_UNKNOWN: spec.full_range = false; break;
    default: return std::nullopt;
  }
  // Chroma siting, per axis (any combination of H_COSITED and V_COSITED, NONE = centred both ways).
  const guint site = GST_VIDEO_INFO_CHROMA_SITE(info);
  const guint cosited = GST_VIDEO_CHROMA_SITE_H_COSITED | GST_VIDEO_CHROMA_SITE_V_COSITED;
  if (site == GST_VIDEO_CHROMA_SITE_UNKNOWN) {
    spec.site = height > 576 ? flashvsr::kChromaSiteMpeg2 : flashvsr::kChromaSiteJpeg;
  } else if (site == GST_VIDEO_CHROMA_SITE_NONE || (site & ~cosited) == 0) {
    spec.site.horizontal = (site & GST_VIDEO_CHROMA_SITE_H_COSITED) ? flashvsr::ChromaSiting::Cosited
                                                                     : flashvsr::ChromaSiting::Centred;
    spec.site.vertical = (site & GST_VIDEO_CHROMA_SITE_V_COSITED) ? flashvsr::ChromaSiting::Cosited
                                                                   : flashvsr::ChromaSiting::Centred;
  } else {
    return std::nullopt;
  }
  return spec;
}

const char* unsupported_reason(const GstVideoInfo* info) {
  if (GST_VIDEO_INFO_IS_INTERLACED(info)) return "interlaced video is not supported";
  if (!pixel_format_of(GST_VIDEO_INFO_FORMAT(info))) return "unsupported format";
  if (!yuv_spec_of(info))
    return "unsupported colorimetry (matrix or range) or chroma-site: expected the BT.601, BT.709 or BT.2020 "
           "matrix, limited or full range, and chroma-site jpeg, mpeg2, cosited, h-cosited or v-cosited "
           "(alternate-line siting such as dv is not implemented)";
  return "";
}

flashvsr::PlaneLayout layout_of(const GstVideoInfo* info) {
  return flashvsr::plane_layout(*pixel_format_of(GST_VIDEO_INFO_FORMAT(info)), GST_VIDEO_INFO_WIDTH(info),
                                GST_VIDEO_INFO_HEIGHT(info));
}

bool is_packed(const GstVideoFrame* frame, const flashvsr::PlaneLayout& layout) {
  const auto* base = static_cast<const uint8_t*>(GST_VIDEO_FRAME_PLANE_DATA(frame, 0));
  for (int p = 0; p < layout.planes; ++p) {
    const auto* plane = static_cast<const uint8_t*>(GST_VIDEO_FRAME_PLANE_DATA(frame, p));
    if (plane != base + layout.offset[p]) return false;
    if (layout.rows[p] > 1 && GST_VIDEO_FRAME_PLANE_STRIDE(frame, p) != layout.row_bytes[p]) return false;
  }
  return true;
}

void read_planes(const GstVideoFrame* frame, const flashvsr::PlaneLayout& layout, uint8_t* packed) {
  for (int p = 0; p < layout.planes; ++p) {
    const auto* src = static_cast<const uint8_t*>(GST_VIDEO_FRAME_PLANE_DATA(frame, p));
    const gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(frame, p);
    uint8_t* dst = packed + layout.offset[p];
    for (int64_t row = 0; row < layout.rows[p]; ++row)
      std::memcpy(dst + row * layout.row_bytes[p], src + row * stride, layout.row_bytes[p]);
  }
}

void write_planes(const uint8_t* packed, const flashvsr::PlaneLayout& layout, GstVideoFrame* frame) {
  for (int p = 0; p < layout.planes; ++p) {
    auto* dst = static_cast<uint8_t*>(GST_VIDEO_FRAME_PLANE_DATA(frame, p));
    const gint stride = GST_VIDEO_FRAME_PLANE_STRIDE(frame, p);
    const uint8_t* src = packed + layout.offset[p];
    for (int64_t row = 0; row < layout.rows[p]; ++row)
      std::memcpy(dst + row * stride, src + row * layout.row_bytes[p], layout.row_bytes[p]);
  }
}

}  // namespace gstflashvsr
