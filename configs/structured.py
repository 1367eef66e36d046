"""Structured modality | organ | disease codes with preferential retrieval (objective 2).

Command (16 + 16 + 16 bits, DCH as the base hashing loss):
  python -m dnh_jax.main --config=configs/structured.py
The flat-code comparison (same loss on the whole code, same 48 bits, same classifiers):
  python -m dnh_jax.main --config=configs/structured.py:head=flat
Quick smoke run:
  python -m dnh_jax.main --config=configs/structured.py:quick

Arguments:
  head=structured|flat; segments=16+16+16 (modality+organ+disease sub-code lengths);
  pair_loss=dch|dpsh|dsh|hashnet|csq|orthohash (the hashing loss of every sub-code and of
  the whole code); subcode=1.0 (weight of the mean sub-code loss; ignored for a flat
  head), whole=1.0 (whole-code loss on full-label similarity), classification=1.0
  (per-branch classifiers); backbone=..., quick, steps=N, lr=X.

Evaluation per preference, written to results.json as test/<preference>/<metric>:
  all, modality, organ, disease: mAP@k with relevance = match on the preferred
  characteristic(s) and nDCG@k with graded relevance = number of matched
  characteristics weighted by the preference; the ranking weights the sub-code Hamming
  distances by the preference (a flat code has one distance for every preference);
  modality>organ>disease: strict priority (lexicographic) ranking.
The checkpoint is selected on the validation split, never on test.
"""

import ml_collections

from dnh_jax import config_lib
from dnh_jax.losses.structured import BASE_LOSSES
from dnh_jax.models.backbones import BACKBONES

BACKBONE_NAMES = tuple(sorted(BACKBONES))  # the registries' names, never a copy
PAIR_LOSSES = BASE_LOSSES
PREFERENCES = ("all", "modality", "organ", "disease", "modality>organ>disease")


def parse_segments(text: str) -> tuple[int, ...]:
  """'16+16+16' -> (16, 16, 16); raises naming the argument on anything else."""
  try:
    segments = tuple(int(s) for s in text.split("+"))
  except ValueError:
    segments = ()
  if len(segments) != 3 or min(segments) <= 0:
    raise config_lib.ConfigArgError(
        f"Config argument segments={text!r}: expected three positive sub-code lengths "
        "joined by '+' (modality+organ+disease), e.g. 16+16+16")
  return segments


def get_config(arg=None):
  a = config_lib.parse_arg(
      arg, head="structured", segments="16+16+16", pair_loss="dch", subcode=1.0, whole=1.0,
      classification=1.0, backbone="small_cnn", quick=False, steps=0, lr=0.0,
      choices={"head": ("structured", "flat"), "pair_loss": PAIR_LOSSES,
               "backbone": BACKBONE_NAMES})
  segments = parse_segments(a.segments)
  c = config_lib.base_config()
  c.data.name = "medphantom"
  c.data.combinations = "published"
  c.model.backbone = a.backbone
  c.model.head = a.head
  c.model.bits = sum(segments)
  c.model.segments = segments if a.head == "structured" else ()
  c.model.classifier = True

  c.loss.name = "structured_" + a.pair_loss
  c.loss.similarity = "all"   # whole-code similarity: every characteristic equal
  c.loss.classification = a.classification
  c.loss.weights = ml_collections.ConfigDict({
      "subcode": a.subcode if a.head == "structured" else 0.0,
      "whole": a.whole,
  })

  c.eval.relevance = "all"
  c.eval.preferences = PREFERENCES
  c.train.best_metric = "val/nDCG@100"
  return config_lib.set_run_length(c, quick=quick if a.quick else None, steps=a.steps,
                                   lr=a.lr)


def quick(c):
  """Small data, images and step count: a run takes a minute or two on two CPU cores."""
  config_lib.shrink_for_quick(c, num_examples=800, steps=60, warmup_steps=5, log_every=10)
