"""Baseline hashing losses on MedPhantom (ablation reference for every objective).

Command (DPSH, 16 bits):
  python -m dnh_jax.main --config=configs/baseline.py:loss=dpsh,bits=16
Quick smoke run (about a minute on two CPU cores):
  python -m dnh_jax.main --config=configs/baseline.py:quick
Arguments: loss=dpsh|dsh|hashnet|dch|csq|greedyhash|orthohash|idhn, bits=16|32|48|64,
backbone=small_cnn|alexnet|resnet18|resnet50, quick, size=32|64|128|224 (default 64, quick
32; 224 = the published work's input, with torchvision's AlexNet / ResNet layer shapes),
init_from=PATH (local torchvision/timm weights or a run; README "Pretrained weights"; or
--config.model.init_from=PATH). `idhn` is a multi-label loss and runs on the MedPhantom
multi-label chest collection. Loss hyperparameters are in loss.weights
(--config.loss.weights.eta=0.5).

Measured at the defaults (MedPhantom difficulty 1.0, 6,000 images at 64 px, small CNN,
2,000 steps of batch 64; test split; mAP relevance = same (modality, organ, disease),
nDCG gain = matched characteristics; train seconds = the training loop on 2 shared CPU
cores with two runs at a time, so about twice a lone run's):

  python -m dnh_jax.ablate --config=configs/baseline.py \
      --sweep='loss=dpsh,dsh,hashnet,dch,csq,greedyhash,orthohash,idhn;bits=16,48'

| loss | mAP@100 16 / 48 bits | nDCG@100 16 / 48 | mAP@1000 16 / 48 | train s 16 / 48 |
|---|---|---|---|---|
| DPSH | 0.366 / 0.363 | 0.678 / 0.676 | 0.352 / 0.349 | 776 / 771 |
| DSH | 0.364 / 0.369 | 0.676 / 0.678 | 0.350 / 0.352 | 573 / 609 |
| HashNet | 0.436 / 0.525 | 0.710 / 0.759 | 0.417 / 0.512 | 588 / 595 |
| DCH | 0.736 / 0.800 | 0.857 / 0.899 | 0.718 / 0.790 | 524 / 515 |
| CSQ | 0.868 / 0.869 | 0.876 / 0.889 | 0.831 / 0.844 | 450 / 451 |
| GreedyHash | 0.724 / 0.795 | 0.869 / 0.901 | 0.712 / 0.788 | 397 / 404 |
| OrthoHash | 0.875 / 0.883 | 0.883 / 0.899 | 0.843 / 0.861 | 286 / 286 |
| IDHN (chest) | 0.100 / 0.095 | 0.137 / 0.128 | 0.085 / 0.082 | 235 / 216 |

The DPSH and DSH rows are the papers' literal forms (now `:plain`); they stop at
organ-level codes (see the calibration note in dnh_jax/data/builders/medphantom.py).
Why, and the default forms that train (bench/pairwise_baselines.py; quick data, 16 bits):

* DPSH: theta_ij = h_i.h_j / 2 has d theta / d h_i = h_j / 2. With 15 combinations 93% of
  pairs are dissimilar; their pushes, summed, point against the common code component and
  the cheapest way down is to shrink every code (within an organ the pull and the push are
  both along the shared code). Codes shrink towards 0 (train quantization error
  0.48-0.60, loss ~log 2), where every pair gradient vanishes. The PyTorch version from the
  paper does the same (test mAP@100 0.354 in-batch; with DeepHash-pytorch's memory bank
  of all training codes, tanh or linear codes, lr 1e-3 or 1e-4: 0.106, all codes 0).
  Logits on cosines, theta_ij = (K/2) cos(h_i, h_j), have no gradient along h_i, so
  shrinking cannot help; balancing similar / dissimilar pairs (HashNet, DCH) lets the few
  similar pairs pull. Default `cosine=1, balance=1`.
* DSH: on tanh codes every bit saturates (train quantization error 0.001-0.008), the tanh
  gradient vanishes and codes freeze per organ group (PyTorch twin: 0.106, all codes
  identical, loss = margin / 2). The paper's network has linear outputs with its
  || |u| - 1 || regulariser and no tanh; so does the default `linear=1`.

Test mAP@100 at 600 steps (seeds 0 / 1; organ-only codes score ~1/3; CSQ 0.561 seed 0):
DPSH plain 0.325 / 0.394, cosine + balance 0.458 / 0.474 (PyTorch twin 0.458 seed 0);
DSH plain 0.426 / 0.402, linear 0.477 / 0.455 (PyTorch twin 0.450 seed 0) (tested in
tests/test_pairwise_baselines.py). With 2,000 images, 1,000 steps (seed 0): DPSH plain
0.366 (loss 0.69-0.75, quantization error 0.33-0.37), default 0.447; DSH plain 0.371
(quantization error <= 0.001), default 0.485; CSQ 0.643.

IDHN runs on the multi-label chest collection, relevant = shares a finding: 52.6% of its
test queries have no finding and count as AP 0; by number of findings its mAP@100 is
0.158 / 0.247 / 0.334 (1 / 2 / 3+ findings, 16 bits).
"""

import ml_collections

from dnh_jax import config_lib, losses
from dnh_jax.models.backbones import BACKBONES

LOSS_NAMES = ("dpsh", "dsh", "hashnet", "dch", "csq", "greedyhash", "orthohash", "idhn")
BACKBONE_NAMES = tuple(sorted(BACKBONES))  # the registry's names, never a copy
# DPSH: logits on code cosines with similar / dissimilar pairs balanced; DSH: the paper's
# linear outputs (no tanh). The plain forms collapse (see the note above).
WORKING_FORM = {"dpsh": {"cosine": 1.0, "balance": 1.0}, "dsh": {"linear": 1.0}}


def get_config(arg=None):
  a = config_lib.parse_arg(arg, loss="dpsh", bits=16, backbone="small_cnn", quick=False,
                           size=0, init_from="", plain=False,
                           choices={"loss": LOSS_NAMES, "bits": (16, 32, 48, 64),
                                    "backbone": BACKBONE_NAMES,
                                    "size": (0, 32, 64, 128, 224)})
  c = config_lib.base_config()
  c.model.backbone = a.backbone
  c.model.bits = a.bits
  c.loss.name = a.loss
  # Every hyperparameter of the loss, at its default, so that a command line can set one
  # (--config.loss.weights.eta=0.5) and config.json records the values used.
  c.loss.weights = ml_collections.ConfigDict(dict(losses.DEFAULT_WEIGHTS[a.loss]))
  if not a.plain:  # the forms of DPSH / DSH that train here (module docstring); `plain`
    c.loss.weights.update(WORKING_FORM.get(a.loss, {}))  # keeps the papers' literal forms
  if a.loss == "greedyhash":  # its classifier on the binary codes predicts these classes
    c.model.code_classifier = c.loss.similarity
  if a.loss == "idhn":
    c.data.multilabel = True
    c.loss.similarity = "shared"
    c.eval.relevance = "shared"
    c.eval.query_groups = ("label_count",)
    c.train.best_metric = "val/nDCG@100"
  if a.quick:
    quick(c)
  if a.size:  # after quick: an explicit size wins over its 32 px
    c.data.image_size = a.size
  c.model.init_from = a.init_from
  return c


def quick(c):
  """Shrinks data, model and steps so a run takes about a minute on two CPU cores."""
  config_lib.shrink_for_quick(c, num_examples=800, steps=40, warmup_steps=5, log_every=10)
  c.train.best_metric = c.train.best_metric.replace("@1000", "@100")
