// SPDX-License-Identifier: LGPL-2.1-or-later
#include "caps_negotiation.h"

#include "video_format.h"

#include "preprocess.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace gstflashvsr {

namespace {

// Transforms an int or int-range dimension field; FALSE for other types (lists...).
gboolean transform_dimension_value(GstPadDirection direction, const GValue* in, double scale, GValue* out) {
  if (G_VALUE_HOLDS_INT(in)) {
    g_value_init(out, G_TYPE_INT);
    g_value_set_int(out, transform_dimension(direction, g_value_get_int(in), scale));
    return TRUE;
  }
  if (GST_VALUE_HOLDS_INT_RANGE(in)) {
    const gint lo = transform_dimension(direction, gst_value_get_int_range_min(in), scale);
    const gint hi = transform_dimension(direction, gst_value_get_int_range_max(in), scale);
    if (lo == hi) {
      g_value_init(out, G_TYPE_INT);
      g_value_set_int(out, lo);
    } else {
      g_value_init(out, GST_TYPE_INT_RANGE);
      gst_value_set_int_range(out, lo, hi);
    }
    return TRUE;
  }
  return FALSE;
}

// Whether `s` can take `value` as its field `name` (absent fields can take anything).
gboolean structure_accepts(const GstStructure* s, const char* name, const GValue* value) {
  const GValue* v = gst_structure_get_value(s, name);
  return v == nullptr || gst_value_can_intersect(v, value);
}

// Colorimetry for the output format, from the input's: the same within a family (RGB or YUV); across
// families the primaries and transfer carry over with the matrix and range of the new family.
std::string preferred_colorimetry(const GstVideoInfo* in_info, GstVideoFormat out_format) {
  GstVideoColorimetry c = in_info->colorimetry;
  const gboolean in_yuv = GST_VIDEO_INFO_IS_YUV(in_info);
  const gboolean out_yuv = GST_VIDEO_FORMAT_INFO_IS_YUV(gst_video_format_get_info(out_format));
  if (in_yuv && !out_yuv) {
    c.matrix = GST_VIDEO_COLOR_MATRIX_RGB;
    c.range = GST_VIDEO_COLOR_RANGE_0_255;
  } else if (!in_yuv && out_yuv) {
    c.matrix = GST_VIDEO_COLOR_MATRIX_BT709;
    c.range = GST_VIDEO_COLOR_RANGE_16_235;
  }
  gchar* str = gst_video_colorimetry_to_string(&c);
  std::string result = str ? str : "";
  g_free(str);
  return result;
}

// The index of the structure of `othercaps` that takes the wanted size (2 points) and format (1 point).
guint best_structure(GstCaps* othercaps, gint want_w, gint want_h, const gchar* format) {
  GValue vw = G_VALUE_INIT, vh = G_VALUE_INIT, vf = G_VALUE_INIT;
  g_value_init(&vw, G_TYPE_INT);
  g_value_init(&vh, G_TYPE_INT);
  g_value_init(&vf, G_TYPE_STRING);
  g_value_set_int(&vw, want_w);
  g_value_set_int(&vh, want_h);
  g_value_set_string(&vf, format ? format : "");
  guint best = 0;
  int best_score = -1;
  for (guint i = 0; i < gst_caps_get_size(othercaps); ++i) {
    const GstStructure* s = gst_caps_get_structure(othercaps, i);
    int score = 0;
    if (want_w > 0 && structure_accepts(s, "width", &vw) && structure_accepts(s, "height", &vh)) score += 2;
    if (format && structure_accepts(s, "format", &vf)) score += 1;
    if (score > best_score) {
      best = i;
      best_score = score;
    }
  }
  g_value_unset(&vw);
  g_value_unset(&vh);
  g_value_unset(&vf);
  return best;
}

// Colorimetry (and chroma siting within YUV) of the fixated structure `s`, carried over from the input
// `in` (of `caps`).
void carry_colour(GstStructure* s, const GstStructure* in, GstCaps* caps) {
  GstVideoInfo in_info;
  const gchar* out_format = gst_structure_get_string(s, "format");
  if (!out_format || !gst_video_info_from_caps(&in_info, caps)) return;
  const GstVideoFormat of = gst_video_format_from_string(out_format);
  const std::string colorimetry = preferred_colorimetry(&in_info, of);
  if (!colorimetry.empty()) {
    GValue v = G_VALUE_INIT;
    g_value_init(&v, G_TYPE_STRING);
    g_value_set_string(&v, colorimetry.c_str());
    // A colorimetry downstream asks for stays; a choice (list) takes ours if it is among them.
    const GValue* current = gst_structure_get_value(s, "colorimetry");
    if (!current || (!G_VALUE_HOLDS_STRING(current) && gst_value_can_intersect(current, &v)))
      gst_structure_take_value(s, "colorimetry", &v);
    else
      g_value_unset(&v);
  }
  // Chroma siting, written out so that downstream need not guess: YUV -> YUV keeps the input's (the caps'
  // string: GStreamer before 1.26 replaces it in GstVideoInfo by the height default when the caps carry no
  // colorimetry), or GStreamer's default for the input height where the caps do not say; RGB -> YUV takes
  // the default for the output height. A siting downstream fixed stays.
  if (!GST_VIDEO_FORMAT_INFO_IS_YUV(gst_video_format_get_info(of)) || gst_structure_has_field(s, "chroma-site"))
    return;
  const gboolean yuv_in = GST_VIDEO_INFO_IS_YUV(&in_info);
  const gchar* given = gst_structure_get_string(in, "chroma-site");
  guint site = !yuv_in ? GST_VIDEO_CHROMA_SITE_UNKNOWN
               : given ? gst_video_chroma_site_from_string(given)
                       : GST_VIDEO_INFO_CHROMA_SITE(&in_info);
  gint out_h = 0;
  const gint lines = yuv_in ? GST_VIDEO_INFO_HEIGHT(&in_info) : gst_structure_get_int(s, "height", &out_h) ? out_h : 0;
  if (site == GST_VIDEO_CHROMA_SITE_UNKNOWN && lines > 0)
    site = lines > 576 ? GST_VIDEO_CHROMA_SITE_MPEG2 : GST_VIDEO_CHROMA_SITE_JPEG;
  gchar* name = site == GST_VIDEO_CHROMA_SITE_UNKNOWN ? nullptr
                                                      : gst_video_chroma_site_to_string((GstVideoChromaSite)site);
  if (name) gst_structure_set(s, "chroma-site", G_TYPE_STRING, name, nullptr);
  g_free(name);
}

}  // namespace

gint transform_dimension(GstPadDirection direction, gint size, double scale) {
  const int64_t v = direction == GST_PAD_SINK ? flashvsr::scaled_size(size, scale) : std::llround(size / scale);
  return static_cast<gint>(std::clamp<int64_t>(v, 1, kMaxSide));
}

bool has_cuda_memory(const GstCaps* caps) {
  for (guint i = 0; i < gst_caps_get_size(caps); ++i) {
    GstCapsFeatures* features = gst_caps_get_features(caps, i);
    if (features && !gst_caps_features_is_any(features) && gst_caps_features_contains(features, kCudaMemoryFeature))
      return true;
  }
  return false;
}

GstCaps* transform_caps(GstPadDirection direction, GstCaps* caps, GstCaps* filter, double scale, bool cuda) {
  GstCaps* ret = gst_caps_new_empty();
  for (guint i = 0; i < gst_caps_get_size(caps); ++i) {
    const GstStructure* s = gst_caps_get_structure(caps, i);
    GstCapsFeatures* features = gst_caps_get_features(caps, i);
    const bool any = !features || gst_caps_features_is_any(features);
    const bool system = !any && gst_caps_features_is_equal(features, GST_CAPS_FEATURES_MEMORY_SYSTEM_MEMORY);
    const bool in_cuda = !any && !system && cuda && gst_caps_features_get_size(features) == 1 &&
                         gst_caps_features_contains(features, kCudaMemoryFeature);
    if (!any && !system && !in_cuda) continue;
    // The memories on the other side, the input's first: video stays where it is unless the other
    // side cannot take it there (the element reads and writes either memory).
    std::vector<const char*> memories;
    if (in_cuda) memories = {kCudaMemoryFeature, GST_CAPS_FEATURE_MEMORY_SYSTEM_MEMORY};
    else if (cuda) memories = {GST_CAPS_FEATURE_MEMORY_SYSTEM_MEMORY, kCudaMemoryFeature};
    else memories = {GST_CAPS_FEATURE_MEMORY_SYSTEM_MEMORY};

    // Any format on the other side; colorimetry and chroma siting belong to the format.
    GstStructure* base = gst_structure_copy(s);
    gst_structure_remove_fields(base, "format", "colorimetry", "chroma-site", nullptr);
    set_format_list(base);

    // Preferred first: the scaled size (inverse for the src pad)...
    const GValue* w = gst_structure_get_value(s, "width");
    const GValue* h = gst_structure_get_value(s, "height");
    GValue tw = G_VALUE_INIT, th = G_VALUE_INIT;
    GstStructure* scaled = nullptr;
    if (w && h && transform_dimension_value(direction, w, scale, &tw)) {
      if (transform_dimension_value(direction, h, scale, &th)) {
        scaled = gst_structure_copy(base);
        gst_structure_take_value(scaled, "width", &tw);
        gst_structure_take_value(scaled, "height", &th);
      } else {
        g_value_unset(&tw);
      }
    }
    // ...then any size, since downstream may fix one (the engine resizes to it).
    gst_structure_set(base, "width", GST_TYPE_INT_RANGE, 1, kMaxSide, "height", GST_TYPE_INT_RANGE, 1, kMaxSide,
                      nullptr);
    for (GstStructure* st : {scaled, base}) {
      if (!st) continue;
      for (const char* memory : memories)
        ret = gst_caps_merge_structure_full(ret, gst_structure_copy(st), gst_caps_features_new(memory, nullptr));
      gst_structure_free(st);
    }
  }
  if (filter) {
    GstCaps* tmp = gst_caps_intersect_full(filter, ret, GST_CAPS_INTERSECT_FIRST);
    gst_caps_unref(ret);
    ret = tmp;
  }
  return ret;
}

GstCaps* fixate_caps(GstPadDirection direction, GstCaps* caps, GstCaps* othercaps, double scale) {
  const GstStructure* in = gst_caps_get_structure(caps, 0);
  const gchar* in_format = gst_structure_get_string(in, "format");
  gint in_w = 0, in_h = 0;
  gst_structure_get_int(in, "width", &in_w);
  gst_structure_get_int(in, "height", &in_h);
  const gint want_w = in_w > 0 ? transform_dimension(direction, in_w, scale) : 0;
  const gint want_h = in_h > 0 ? transform_dimension(direction, in_h, scale) : 0;

  GstCaps* result = gst_caps_copy_nth(othercaps, best_structure(othercaps, want_w, want_h, in_format));
  gst_caps_unref(othercaps);
  GstStructure* s = gst_caps_get_structure(result, 0);

  if (in_format && gst_structure_has_field(s, "format") && !gst_structure_fixate_field_string(s, "format", in_format))
    gst_structure_fixate_field(s, "format");
  if (want_w > 0) gst_structure_fixate_field_nearest_int(s, "width", want_w);
  if (want_h > 0) gst_structure_fixate_field_nearest_int(s, "height", want_h);

  gint n, d;
  if (gst_structure_get_fraction(in, "framerate", &n, &d) && gst_structure_has_field(s, "framerate"))
    gst_structure_fixate_field_nearest_fraction(s, "framerate", n, d);
  if (gst_structure_get_fraction(in, "pixel-aspect-ratio", &n, &d)) {
    if (gst_structure_has_field(s, "pixel-aspect-ratio"))
      gst_structure_fixate_field_nearest_fraction(s, "pixel-aspect-ratio", n, d);
    else
      gst_structure_set(s, "pixel-aspect-ratio", GST_TYPE_FRACTION, n, d, nullptr);
  }
  carry_colour(s, in, caps);
  return gst_caps_fixate(result);
}

}  // namespace gstflashvsr
