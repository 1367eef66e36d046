"""torchvision importable next to the CPU-only torch of requirements-dev (shared by tests).

The PyPI torchvision wheel is built against CUDA torch; with the CPU torch its C ops
(nms, roi_align, ...) cannot load, and its import then fails registering a fake kernel for
torchvision::nms. The models need none of those ops: declaring the two schemas that the
import touches is enough.
"""

import sys

import torch

_FRAGMENTS = []   # keeps the library fragment alive


def import_torchvision():
  """Returns the torchvision module, declaring its missing op schemas if it must."""
  try:
    import torchvision  # pylint: disable=import-outside-toplevel
    return torchvision
  except RuntimeError:
    lib = torch.library.Library("torchvision", "FRAGMENT")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _FRAGMENTS.append(lib)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
      del sys.modules[name]
    import torchvision  # pylint: disable=import-outside-toplevel
    return torchvision
