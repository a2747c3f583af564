// SPDX-License-Identifier: LGPL-2.1-or-later
// flashvsr: streaming FlashVSR-Tiny video super-resolution (see gstflashvsr.cpp).
#pragma once

#include <gst/base/gstbasetransform.h>

G_BEGIN_DECLS

#define GST_TYPE_FLASHVSR (gst_flashvsr_get_type ())
G_DECLARE_FINAL_TYPE (GstFlashVsr, gst_flashvsr, GST, FLASHVSR, GstBaseTransform)

GST_ELEMENT_REGISTER_DECLARE (flashvsr);

G_END_DECLS
