// SPDX-License-Identifier: LGPL-2.1-or-later
// Registers the flashvsr plugin's elements.
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "gstflashvsr.h"

static gboolean
plugin_init (GstPlugin * plugin)
{
  return GST_ELEMENT_REGISTER (flashvsr, plugin);
}

GST_PLUGIN_DEFINE (GST_VERSION_MAJOR, GST_VERSION_MINOR, flashvsr,
    "FlashVSR-Tiny streaming video super-resolution (LibTorch)",
    plugin_init, VERSION, GST_LICENSE, GST_PACKAGE_NAME, GST_PACKAGE_ORIGIN)
