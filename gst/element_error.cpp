// SPDX-License-Identifier: LGPL-2.1-or-later
#include "element_error.h"

#include "error.h"

#include <c10/util/Exception.h>

#include <exception>
#include <optional>

namespace gstflashvsr {

namespace {

// RESOURCE for what the user can fix (files, settings, input), LIBRARY/INIT for the device and LibTorch.
void set_setup_code(ErrorMessage* m, std::optional<flashvsr::Error::Kind> kind) {
  m->domain = GST_LIBRARY_ERROR;
  m->code = GST_LIBRARY_ERROR_INIT;
  if (!kind) return;
  switch (*kind) {
    case flashvsr::Error::Kind::NotFound:
      m->domain = GST_RESOURCE_ERROR;
      m->code = GST_RESOURCE_ERROR_NOT_FOUND;
      break;
    case flashvsr::Error::Kind::BadFile:
      m->domain = GST_RESOURCE_ERROR;
      m->code = GST_RESOURCE_ERROR_READ;
      break;
    case flashvsr::Error::Kind::BadSettings:
    case flashvsr::Error::Kind::BadInput:
      m->domain = GST_RESOURCE_ERROR;
      m->code = GST_RESOURCE_ERROR_SETTINGS;
      break;
    case flashvsr::Error::Kind::Device:
    case flashvsr::Error::Kind::Internal:
      break;
  }
}

}  // namespace

ErrorMessage current_exception_message(Stage stage, const StepWords& words, const std::string& debug) {
  ErrorMessage m;
  m.debug = debug;
  std::optional<flashvsr::Error::Kind> kind;  // set for the engine's own errors
  bool out_of_memory = false;
  std::string phrase, reason;
  try {
    throw;
  } catch (const flashvsr::Error& e) {
    kind = e.kind();
    phrase = words.engine;
    reason = e.what();
  } catch (const c10::OutOfMemoryError& e) {
    // Typically CUDA: the frame size, the precision or the number of streams on the device is too much.
    out_of_memory = true;
    phrase = words.torch;
    reason = e.what_without_backtrace();
  } catch (const c10::Error& e) {
    phrase = words.torch;
    reason = e.what_without_backtrace();
  } catch (const std::exception& e) {
    phrase = words.other;
    reason = e.what();
  } catch (...) {
    phrase = words.other;
    reason = "unknown exception";
  }
  if (stage == Stage::Streaming) {
    m.domain = GST_STREAM_ERROR;
    m.code = GST_STREAM_ERROR_FAILED;
    if (out_of_memory) {
      reason = "out of memory: " + reason;
      m.debug += "; smaller frames, bf16/fp16 precision or fewer streams per device may fit";
    }
  } else {
    set_setup_code(&m, kind);
  }
  m.text = phrase + ": " + reason;
  return m;
}

void post_error(GstElement* element, const ErrorMessage& m, const char* file, const char* function, int line) {
  gst_element_message_full(element, GST_MESSAGE_ERROR, m.domain, m.code, g_strdup(m.text.c_str()),
                           g_strdup(m.debug.c_str()), file, function, line);
}

}  // namespace gstflashvsr
