// SPDX-License-Identifier: LGPL-2.1-or-later
// The raw video of the flashvsr element's pads (gst/video_format.h): the template caps, the formats and
// colorimetry it refuses, and the plane copies between GStreamer's frame layout (strides, plane offsets)
// and the engine's packed layout. Byte positions are computed here from GstVideoInfo's own offsets and
// strides, not through the functions under test.
#include "caps_negotiation.h"
#include "video_format.h"

#include <gst/gst.h>
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

using namespace gstflashvsr;

namespace {

GstVideoInfo info_of(const std::string& caps_string) {
  GstVideoInfo info;
  GstCaps* caps = gst_caps_from_string(caps_string.c_str());
  EXPECT_NE(caps, nullptr) << caps_string;
  EXPECT_TRUE(caps && video_info_from_caps(&info, caps)) << caps_string;
  if (caps) gst_caps_unref(caps);
  return info;
}

// Packed bytes that differ from plane to plane and row to row: uint8 [layout.size].
std::vector<uint8_t> pattern(const flashvsr::PlaneLayout& l) {
  std::vector<uint8_t> bytes(static_cast<size_t>(l.size));
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>((i * 7 + i / 13) % 251);
  return bytes;
}

}  // namespace

TEST(VideoFormat, TemplateCapsListEveryFormatUpTo16384ProgressiveInCudaThenSystemMemory) {
  GstCaps* got = template_caps();
  const std::string video =
      " format=(string){ RGB, RGBx, BGRx, RGBA, BGRA, I420, NV12, I420_10LE, P010_10LE, Y444_16LE }, width=(int)[ 1, 16384 ], "
      "height=(int)[ 1, 16384 ], framerate=(fraction)[ 0/1, 2147483647/1 ], interlace-mode=(string)progressive";
  GstCaps* want = gst_caps_from_string(
      ((kHaveCudaMemory ? "video/x-raw(memory:CUDAMemory)," + video + "; " : std::string()) + "video/x-raw," + video)
          .c_str());
  EXPECT_TRUE(gst_caps_is_strictly_equal(got, want)) << gst_caps_to_string(got);
  gst_caps_unref(want);
  gst_caps_unref(got);
  for (GstVideoFormat f : {GST_VIDEO_FORMAT_RGB, GST_VIDEO_FORMAT_RGBx, GST_VIDEO_FORMAT_BGRx, GST_VIDEO_FORMAT_RGBA,
                           GST_VIDEO_FORMAT_BGRA, GST_VIDEO_FORMAT_I420, GST_VIDEO_FORMAT_NV12,
                           GST_VIDEO_FORMAT_I420_10LE, GST_VIDEO_FORMAT_P010_10LE, GST_VIDEO_FORMAT_Y444_16LE})
    EXPECT_TRUE(pixel_format_of(f).has_value()) << gst_video_format_to_string(f);
  for (GstVideoFormat f : {GST_VIDEO_FORMAT_YUY2, GST_VIDEO_FORMAT_GRAY8, GST_VIDEO_FORMAT_ARGB,
                           GST_VIDEO_FORMAT_I420_10BE, GST_VIDEO_FORMAT_P016_LE, GST_VIDEO_FORMAT_I420_12LE})
    EXPECT_FALSE(pixel_format_of(f).has_value()) << gst_video_format_to_string(f);
}

TEST(VideoFormat, InterlacedOtherFormatsMatricesAndAlternateLineSitingAreRefusedWithAReason) {
  for (const char* ok : {"video/x-raw,format=RGB,width=32,height=24", "video/x-raw,format=I420,width=32,height=24",
                         "video/x-raw,format=NV12,width=32,height=24,colorimetry=bt2020,chroma-site=cosited"})
  {
    const GstVideoInfo info = info_of(ok);
    EXPECT_STREQ(unsupported_reason(&info), "") << ok;
  }
  for (const char* bad : {"video/x-raw,format=RGB,width=32,height=24,interlace-mode=interleaved",
                          "video/x-raw,format=YUY2,width=32,height=24",
                          "video/x-raw,format=I420,width=32,height=24,colorimetry=smpte240m",
                          "video/x-raw,format=I420,width=32,height=24,chroma-site=dv"}) {
    const GstVideoInfo info = info_of(bad);
    EXPECT_STRNE(unsupported_reason(&info), "") << bad;
  }
}

TEST(VideoFormat, MissingYuvMatrixRangeAndSitingTakeGStreamersDefaultsForTheHeight) {
  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_I420, 1920, 1080);
  info.colorimetry.matrix = GST_VIDEO_COLOR_MATRIX_UNKNOWN;
  info.colorimetry.range = GST_VIDEO_COLOR_RANGE_UNKNOWN;
  info.chroma_site = GST_VIDEO_CHROMA_SITE_UNKNOWN;
  auto spec = yuv_spec_of(&info);
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->matrix, flashvsr::YuvMatrix::BT709);
  EXPECT_FALSE(spec->full_range);
  EXPECT_EQ(spec->site.horizontal, flashvsr::ChromaSiting::Cosited);  // mpeg2 above 576 lines
  EXPECT_EQ(spec->site.vertical, flashvsr::ChromaSiting::Centred);
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_I420, 720, 576);
  info.colorimetry.matrix = GST_VIDEO_COLOR_MATRIX_UNKNOWN;
  info.chroma_site = GST_VIDEO_CHROMA_SITE_UNKNOWN;
  spec = yuv_spec_of(&info);
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->matrix, flashvsr::YuvMatrix::BT601);
  EXPECT_EQ(spec->site.horizontal, flashvsr::ChromaSiting::Centred);  // jpeg up to 576 lines
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_NV12, 3840, 2160);
  info.colorimetry.matrix = GST_VIDEO_COLOR_MATRIX_UNKNOWN;
  EXPECT_EQ(yuv_spec_of(&info)->matrix, flashvsr::YuvMatrix::BT2020);
}

// Odd sizes: 35x21 RGB has 105-byte rows in 108-byte strides; I420 has 36-byte luma and 20-byte chroma
// strides (18x11 chroma); NV12 a 36-byte luma stride (35-byte rows) and 36-byte chroma rows.
TEST(VideoFormat, PlaneCopiesHonourStridesAndPlaneOffsetsAndLeaveThePaddingAlone) {
  for (const char* format : {"RGB", "I420", "NV12", "I420_10LE", "P010_10LE", "Y444_16LE"}) {
    SCOPED_TRACE(format);
    GstVideoInfo info;
    gst_video_info_set_format(&info, gst_video_format_from_string(format), 35, 21);
    const flashvsr::PlaneLayout l = layout_of(&info);
    const std::vector<uint8_t> packed = pattern(l);
    GstBuffer* buffer = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info), nullptr);
    gst_buffer_memset(buffer, 0, 0xA5, GST_VIDEO_INFO_SIZE(&info));
    GstVideoFrame frame;
    ASSERT_TRUE(gst_video_frame_map(&frame, &info, buffer, GST_MAP_WRITE));
    EXPECT_FALSE(is_packed(&frame, l)) << "padded rows are not the packed layout";
    write_planes(packed.data(), l, &frame);
    gst_video_frame_unmap(&frame);

    GstMapInfo map;
    ASSERT_TRUE(gst_buffer_map(buffer, &map, GST_MAP_READ));
    std::vector<bool> written(map.size, false);
    int64_t wrong = 0;
    for (int p = 0; p < l.planes; ++p)
      for (int64_t r = 0; r < l.rows[p]; ++r)
        for (int64_t c = 0; c < l.row_bytes[p]; ++c) {
          const size_t at = GST_VIDEO_INFO_PLANE_OFFSET(&info, p) + r * GST_VIDEO_INFO_PLANE_STRIDE(&info, p) + c;
          written[at] = true;
          wrong += map.data[at] != packed[l.offset[p] + r * l.row_bytes[p] + c];
        }
    int64_t padding_touched = 0;
    for (size_t i = 0; i < map.size; ++i) padding_touched += !written[i] && map.data[i] != 0xA5;
    gst_buffer_unmap(buffer, &map);
    EXPECT_EQ(wrong, 0) << "bytes not where GstVideoInfo puts them";
    EXPECT_EQ(padding_touched, 0);

    std::vector<uint8_t> back(static_cast<size_t>(l.size), 0);
    ASSERT_TRUE(gst_video_frame_map(&frame, &info, buffer, GST_MAP_READ));
    read_planes(&frame, l, back.data());
    gst_video_frame_unmap(&frame);
    EXPECT_EQ(back, packed);
    gst_buffer_unref(buffer);
  }
}

// The engine's layout of every format of the pads is GStreamer's description of it: per plane, the rows
// of its components and their width times their pixel stride; the bit depth and, for P010, the code's
// position in its 16-bit word (GStreamer's shift).
TEST(VideoFormat, EngineLayoutsAreGStreamersPlanesRowsAndDepths) {
  GstCaps* caps = template_caps();
  const GValue* list = gst_structure_get_value(gst_caps_get_structure(caps, 0), "format");
  ASSERT_TRUE(GST_VALUE_HOLDS_LIST(list));
  for (guint i = 0; i < gst_value_list_get_size(list); ++i) {
    const GstVideoFormat format = gst_video_format_from_string(g_value_get_string(gst_value_list_get_value(list, i)));
    const GstVideoFormatInfo* finfo = gst_video_format_get_info(format);
    for (const auto& [w, h] : {std::make_pair(35, 21), std::make_pair(1, 1), std::make_pair(64, 48)}) {
      SCOPED_TRACE(std::string(GST_VIDEO_FORMAT_INFO_NAME(finfo)) + " " + std::to_string(w) + "x" + std::to_string(h));
      GstVideoInfo info;
      ASSERT_TRUE(gst_video_info_set_format(&info, format, w, h));
      const flashvsr::PlaneLayout l = layout_of(&info);
      ASSERT_EQ(l.planes, static_cast<int>(GST_VIDEO_INFO_N_PLANES(&info)));
      for (int p = 0; p < l.planes; ++p) {
        int comp = -1;
        for (guint c = 0; c < GST_VIDEO_INFO_N_COMPONENTS(&info) && comp < 0; ++c)
          if (static_cast<int>(GST_VIDEO_FORMAT_INFO_PLANE(finfo, c)) == p) comp = static_cast<int>(c);
        ASSERT_GE(comp, 0);
        EXPECT_EQ(l.rows[p], GST_VIDEO_INFO_COMP_HEIGHT(&info, comp)) << "plane " << p;
        EXPECT_EQ(l.row_bytes[p], GST_VIDEO_INFO_COMP_WIDTH(&info, comp) * GST_VIDEO_INFO_COMP_PSTRIDE(&info, comp))
            << "plane " << p;
        EXPECT_LE(l.row_bytes[p], GST_VIDEO_INFO_PLANE_STRIDE(&info, p)) << "plane " << p;
      }
      const flashvsr::PixelFormat engine = *pixel_format_of(format);
      EXPECT_EQ(flashvsr::bit_depth(engine), static_cast<int>(GST_VIDEO_FORMAT_INFO_DEPTH(finfo, 0)));
      EXPECT_EQ(flashvsr::is_yuv(engine), static_cast<bool>(GST_VIDEO_FORMAT_INFO_IS_YUV(finfo)));
      if (format == GST_VIDEO_FORMAT_P010_10LE) EXPECT_EQ(GST_VIDEO_FORMAT_INFO_SHIFT(finfo, 0), 6u);
      else EXPECT_EQ(GST_VIDEO_FORMAT_INFO_SHIFT(finfo, 0), 0u);
      EXPECT_STREQ(flashvsr::pixel_format_name(engine), GST_VIDEO_FORMAT_INFO_NAME(finfo));
    }
  }
  gst_caps_unref(caps);
}

// 1080p I420/NV12/RGB and 32x24 RGB frames in one memory are already the packed layout (one copy moves
// them); a frame whose planes sit elsewhere (a GstVideoMeta with its own offsets) is not.
TEST(VideoFormat, TightFramesAreThePackedLayoutAndOthersAreNot) {
  for (const auto& [format, w, h] : {std::make_tuple(GST_VIDEO_FORMAT_I420, 1920, 1080),
                                     std::make_tuple(GST_VIDEO_FORMAT_NV12, 1920, 1080),
                                     std::make_tuple(GST_VIDEO_FORMAT_RGB, 1920, 1080),
                                     std::make_tuple(GST_VIDEO_FORMAT_RGB, 32, 24)}) {
    GstVideoInfo info;
    gst_video_info_set_format(&info, format, w, h);
    SCOPED_TRACE(GST_VIDEO_INFO_NAME(&info));
    const flashvsr::PlaneLayout l = layout_of(&info);
    EXPECT_EQ(static_cast<gsize>(l.size), GST_VIDEO_INFO_SIZE(&info));
    GstBuffer* buffer = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info), nullptr);
    GstVideoFrame frame;
    ASSERT_TRUE(gst_video_frame_map(&frame, &info, buffer, GST_MAP_READ));
    EXPECT_TRUE(is_packed(&frame, l));
    gst_video_frame_unmap(&frame);
    gst_buffer_unref(buffer);
  }
  // I420 32x24 with 64 bytes of padding between the planes, described by a GstVideoMeta.
  GstVideoInfo info;
  gst_video_info_set_format(&info, GST_VIDEO_FORMAT_I420, 32, 24);
  const flashvsr::PlaneLayout l = layout_of(&info);
  GstBuffer* buffer = gst_buffer_new_allocate(nullptr, GST_VIDEO_INFO_SIZE(&info) + 128, nullptr);
  gsize offset[GST_VIDEO_MAX_PLANES] = {0, 32 * 24 + 64, 32 * 24 + 64 + 16 * 12 + 64};
  gint stride[GST_VIDEO_MAX_PLANES] = {32, 16, 16};
  gst_buffer_add_video_meta_full(buffer, GST_VIDEO_FRAME_FLAG_NONE, GST_VIDEO_FORMAT_I420, 32, 24, 3, offset, stride);
  GstVideoFrame frame;
  ASSERT_TRUE(gst_video_frame_map(&frame, &info, buffer, GST_MAP_READ));
  EXPECT_FALSE(is_packed(&frame, l));
  gst_video_frame_unmap(&frame);
  gst_buffer_unref(buffer);
}

// transform_caps, for caps in `memory` (a caps feature) of NV12 32x24: the memories of the structures
// offered on the other pad, in order, each with the width it offers ("any" for a range).
std::vector<std::string> offered(const char* memory, bool cuda) {
  GstCaps* in = gst_caps_from_string("video/x-raw,format=NV12,width=32,height=24,framerate=25/1");
  gst_caps_set_features(in, 0, gst_caps_features_new(memory, nullptr));
  GstCaps* out = gstflashvsr::transform_caps(GST_PAD_SINK, in, nullptr, 4.0, cuda);
  std::vector<std::string> got;
  for (guint i = 0; i < gst_caps_get_size(out); ++i) {
    gint w = 0;
    const bool fixed = gst_structure_get_int(gst_caps_get_structure(out, i), "width", &w);
    gchar* f = gst_caps_features_to_string(gst_caps_get_features(out, i));
    got.push_back(std::string(f) + " " + (fixed ? std::to_string(w) : "any"));
    g_free(f);
  }
  gst_caps_unref(out);
  gst_caps_unref(in);
  return got;
}

TEST(VideoFormatCaps, OnCudaTheInputsMemoryComesFirstThenTheOtherForTheScaledSizeThenAnySize) {
  EXPECT_EQ(offered("memory:CUDAMemory", true),
            (std::vector<std::string>{"memory:CUDAMemory 128", "memory:SystemMemory 128", "memory:CUDAMemory any",
                                      "memory:SystemMemory any"}));
  EXPECT_EQ(offered("memory:SystemMemory", true),
            (std::vector<std::string>{"memory:SystemMemory 128", "memory:CUDAMemory 128", "memory:SystemMemory any",
                                      "memory:CUDAMemory any"}));
}

TEST(VideoFormatCaps, WithoutCudaCudaMemoryIsNeitherTakenNorOffered) {
  EXPECT_EQ(offered("memory:CUDAMemory", false), std::vector<std::string>{});
  EXPECT_EQ(offered("memory:SystemMemory", false),
            (std::vector<std::string>{"memory:SystemMemory 128", "memory:SystemMemory any"}));
  // Other memories are refused either way.
  EXPECT_EQ(offered("memory:GLMemory", true), std::vector<std::string>{});
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  gst_init(&argc, &argv);
  g_log_set_always_fatal(static_cast<GLogLevelFlags>(G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL));
  const int status = RUN_ALL_TESTS();
  gst_deinit();
  return status;
}
