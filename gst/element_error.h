// SPDX-License-Identifier: LGPL-2.1-or-later
// The one mapping from what the engine (or LibTorch) throws to the flashvsr element's ERROR messages,
// used by every vfunc that calls the engine (docs/element.md, Model and errors):
//   set-up (loading the model, making a stream): flashvsr::Error by kind to RESOURCE/NOT_FOUND (missing
//     directory or file), RESOURCE/READ (a file that is not what it should be), RESOURCE/SETTINGS (bad
//     settings or input), LIBRARY/INIT (device, internal); any other exception (LibTorch's c10::Error,
//     out of memory included) to LIBRARY/INIT;
//   streaming: STREAM/FAILED whatever was thrown, with a hint for out of memory.
// The message text is the exception's message after a phrase naming the step; the debug string gives the
// settings or sizes involved.
#pragma once

#include <gst/gst.h>

#include <string>

namespace gstflashvsr {

enum class Stage { Setup, Streaming };

// How a message names the step that failed, per kind of exception ("<phrase>: <exception's message>").
struct StepWords {
  std::string engine;  // after flashvsr::Error, whose message names the file, tensor or setting itself
  std::string torch;   // after c10::Error (LibTorch, out of memory included)
  std::string other;   // after any other exception
  // All three the same.
  static StepWords all(const std::string& phrase) { return {phrase, phrase, phrase}; }
};

struct ErrorMessage {
  GQuark domain = 0;
  gint code = 0;
  std::string text, debug;
};

// The message for the exception being handled: call it only inside a catch block.
ErrorMessage current_exception_message(Stage stage, const StepWords& words, const std::string& debug);

// Posts `m` as an ERROR message of `element`, naming the code location given.
void post_error(GstElement* element, const ErrorMessage& m, const char* file, const char* function, int line);

}  // namespace gstflashvsr

#define FLASHVSR_POST_ERROR(element, message) \
  gstflashvsr::post_error(GST_ELEMENT_CAST(element), (message), __FILE__, GST_FUNCTION, __LINE__)
