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

// For each system-memory structure of `caps`: the scaled size (when width and height are ints or ranges),
// then any size, every format; intersected with `filter` (GST_CAPS_INTERSECT_FIRST) when given.
GstCaps* transform_caps(GstPadDirection direction, GstCaps* caps, GstCaps* filter, double scale);

// Fixates `othercaps` (taken) for `caps` on the other pad: the structure that takes the scaled size and
// the input format, then format, size, framerate, pixel aspect ratio, colorimetry and chroma siting.
GstCaps* fixate_caps(GstPadDirection direction, GstCaps* caps, GstCaps* othercaps, double scale);

}  // namespace gstflashvsr
