"""Baseline hashing losses on MedPhantom (ablation reference for every objective).

Command (DPSH, 16 bits):
  python -m dnh_jax.main --config=configs/baseline.py:loss=dpsh,bits=16
Quick smoke run (about a minute on two CPU cores):
  python -m dnh_jax.main --config=configs/baseline.py:quick
Arguments: loss=dpsh|dsh|hashnet|dch|csq|greedyhash|orthohash|idhn, bits=16|32|48|64,
backbone=small_cnn|alexnet|resnet18|resnet50, quick. `idhn` is a multi-label loss and runs
on the MedPhantom multi-label chest collection.
"""

import ml_collections

from dnh_jax import config_lib, losses

LOSS_NAMES = ("dpsh", "dsh", "hashnet", "dch", "csq", "greedyhash", "orthohash", "idhn")
BACKBONE_NAMES = ("small_cnn", "alexnet", "resnet18", "resnet50")


def get_config(arg=None):
  a = config_lib.parse_arg(arg, loss="dpsh", bits=16, backbone="small_cnn", quick=False,
                           choices={"loss": LOSS_NAMES, "bits": (16, 32, 48, 64),
                                    "backbone": BACKBONE_NAMES})
  c = config_lib.base_config()
  c.model.backbone = a.backbone
  c.model.bits = a.bits
  c.loss.name = a.loss
  # Every hyperparameter of the loss, at its default, so that a command line can set one
  # (--config.loss.weights.eta=0.5) and config.json records the values used.
  c.loss.weights = ml_collections.ConfigDict(dict(losses.DEFAULT_WEIGHTS[a.loss]))
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
  return c


def quick(c):
  """Shrinks data, model and steps so a run takes about a minute on two CPU cores."""
  config_lib.shrink_for_quick(c, num_examples=800, steps=40, warmup_steps=5, log_every=10)
  c.train.best_metric = c.train.best_metric.replace("@1000", "@100")
