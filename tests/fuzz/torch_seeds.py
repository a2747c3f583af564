# SPDX-License-Identifier: LGPL-2.1-or-later
"""Seeds for fuzz-torch-archive written by PyTorch itself (tools/fuzz.sh runs this when a Python with
torch is available): the layouts torch.save really produces -- plain dicts, state_dict() OrderedDicts,
single tensors of every dtype the reader knows, non-contiguous tensors, storage offsets, shared storages,
pickle protocols 2 and 4 -- plus a legacy (pre-1.6) file, which the reader must reject cleanly.

    python3 torch_seeds.py OUT_DIR
"""
import collections
import os
import sys

import torch


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(5)
    written = 0

    def save(name, obj, **kw):
        nonlocal written
        torch.save(obj, os.path.join(out, "python-" + name), **kw)
        written += 1

    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
              torch.int16, torch.int8, torch.uint8, torch.bool]
    for dt in dtypes:
        t = (torch.randn(2, 3) * 10).to(dt) if dt != torch.bool else torch.rand(2, 3) > 0.5
        save("tensor-" + str(dt).replace("torch.", ""), t)
    save("tensor-scalar", torch.tensor(3.5))
    save("tensor-empty", torch.zeros(2, 0, 3))
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    save("tensor-transposed", base.t())
    save("tensor-offset-view", base[1:, 2:])
    save("tensor-strided", base[:, ::2])
    save("tensor-expanded", torch.ones(1, 3).expand(4, 3))

    save("dict", {"w": torch.randn(3, 2), "b": torch.zeros(3), "n": torch.arange(5)})
    save("dict-shared-storage", {"full": base, "row": base[2], "col": base[:, 1]})
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    save("state-dict", model.state_dict())
    save("state-dict-protocol4", model.state_dict(), pickle_protocol=4)
    save("ordered-dict", collections.OrderedDict([("a", torch.ones(2)), ("b", torch.zeros(2, 2, dtype=torch.half))]))
    save("empty-dict", {})
    save("legacy-format", {"w": torch.ones(2)}, _use_new_zipfile_serialization=False)
    # Objects the reader must refuse: other containers and values.
    save("list-of-tensors", [torch.ones(2), torch.zeros(1)])
    save("nested-dict", {"inner": {"w": torch.ones(1)}})
    save("int-value", {"step": 3, "w": torch.ones(1)})
    print(f"{out}: {written} PyTorch-written seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
