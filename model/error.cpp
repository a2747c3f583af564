// SPDX-License-Identifier: LGPL-2.1-or-later
#include "error.h"

namespace flashvsr {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace flashvsr
