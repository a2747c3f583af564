#!/usr/bin/env python3
"""Print the LibTorch root (the directory holding include/, lib/, share/cmake) of the active Python's torch.

Meson runs this when -Dlibtorch is not given. The root is derived from torch.utils.cmake_prefix_path
(<root>/share/cmake), which is what CMake users would pass as CMAKE_PREFIX_PATH.
"""
import os
import sys

try:
    import torch.utils  # noqa: F401
    import torch
except Exception as exc:  # pragma: no cover - message goes to meson
    sys.stderr.write(f"cannot import torch from {sys.executable}: {exc}\n")
    sys.exit(1)

root = os.path.dirname(os.path.dirname(os.path.abspath(torch.utils.cmake_prefix_path)))
if not os.path.isdir(os.path.join(root, "include")) or not os.path.isdir(os.path.join(root, "lib")):
    sys.stderr.write(f"torch at {root} has no include/ and lib/ (is this a LibTorch-carrying wheel?)\n")
    sys.exit(1)
print(root)
