"""DPSH and DSH train past the organ-level plateau on a small MedPhantom run.

`configs/baseline.py:quick` data (800 images at 32 px, 15 (modality, organ, disease)
combinations, 3 diseases per organ) with STEPS steps of batch 32 on one device. Codes
that only tell organs apart score test mAP@100 about 1/3 (relevance = same modality,
organ and disease); the papers' plain forms (`:plain`) stay near it, the defaults of
configs/baseline.py (DPSH on cosine logits with balanced pairs, DSH on linear outputs) go
clearly above it. About 40 s per run on two shared cores.
"""

import importlib.util
import os

import pytest

from dnh_jax import train

STEPS = 600
# Measured test mAP@100 at STEPS steps, seeds 0 / 1 (configs/baseline.py's note):
#   DPSH plain 0.325 / 0.394, default 0.458 / 0.474 (CSQ 0.561 at seed 0);
#   DSH  plain 0.426 / 0.402, default 0.477 / 0.455.
# Each threshold lies between the plain form's best seed and the default's worst.
THRESHOLDS = {"dpsh": 0.43, "dsh": 0.44}


def _config(loss, seed=0):
  path = os.path.join(os.path.dirname(__file__), "..", "configs", "baseline.py")
  spec = importlib.util.spec_from_file_location("baseline_cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"loss={loss},quick")
  c.seed = seed
  # As the measured runs: validation at 0, STEPS / 2 and STEPS picks the tested state.
  c.train.steps, c.train.eval_every, c.train.checkpoint_every = STEPS, STEPS // 2, STEPS
  c.train.log_every = 100
  c.mesh.data = 1   # the measured runs' numerics (conftest fakes four devices)
  return c


@pytest.mark.parametrize("loss", ["dpsh", "dsh"])
def test_default_form_separates_diseases_within_organs(tmp_path, loss):
  results = train.train_and_evaluate(_config(loss), str(tmp_path))
  assert results["test/mAP@100"] > THRESHOLDS[loss], results["test/mAP@100"]
