// SPDX-License-Identifier: LGPL-2.1-or-later
// Errors and logging of the FlashVSR engine library. The library never prints and never aborts on bad
// input: it throws flashvsr::Error with a message that names what was wrong (file, tensor, expected vs
// found), and reports non-fatal findings through a caller-supplied log callback.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace flashvsr {

class Error : public std::runtime_error {
 public:
  enum class Kind {
    NotFound,     // a file or directory does not exist or cannot be opened
    BadFile,      // a file exists but is not what it should be (format, tensor names, shapes, dtypes)
    BadSettings,  // a setting is out of range or inconsistent
    BadInput,     // frames or tensors handed to the engine are malformed
    Device,       // the requested device is unavailable, or it failed (e.g. out of memory)
    Internal,     // a broken invariant of the library itself
  };
  Error(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

enum class LogLevel { Debug, Info, Warning, Error };
using LogFn = std::function<void(LogLevel, const std::string&)>;

// "[1, 16, 6, 32, 32]"
std::string shape_string(const std::vector<int64_t>& shape);


}  // namespace flashvsr
