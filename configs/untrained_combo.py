"""Retrieval of untrained characteristic combinations (objective 4) - the main command.

Command (independent sub-networks with per-network training views, 16 + 16 + 16 bits,
MedPhantom with three held-out (modality, organ) pairs; about 1.5 minutes on two CPU
cores):
  python -m dnh_jax.main --config=configs/untrained_combo.py
The comparisons, on exactly the same data and split (same seeds):
  python -m dnh_jax.main --config=configs/untrained_combo.py:views=none
  python -m dnh_jax.main --config=configs/untrained_combo.py:model=structured
  python -m dnh_jax.main --config=configs/untrained_combo.py:model=flat
Three seeds of all four, with mean and standard deviation (README's table):
  python -m dnh_jax.ablate --config=configs/untrained_combo.py --seeds=0,1,2 \\
      --variants='base;views=none;model=structured;model=flat' --base=combinations=all
Quick smoke run (about 30 s):
  python -m dnh_jax.main --config=configs/untrained_combo.py:quick

Protocol. MedPhantom renders the seen combinations (`combinations=`) plus every disease
of the held-out pairs (default MRI/breast, CT/brain, US/chest: each modality and each
organ of them is seen in training, never together) and of one validation-transfer pair.
Held-out examples enter only the test query and gallery splits. The validation-transfer
pair (`val_held_out=auto`: MRI/chest, or the next of VAL_CANDIDATES that is not a test
pair) enters only val_query and val_gallery: validation then measures retrieval of a
combination training never saw, without looking at a test pair, and the views and terms
below were chosen on it. `split_manifest.json` counts both per split ("held_out",
"validation_transfer") and the run fails if either leaked. Checkpoints are selected on
validation (val/mAP@100), never on test.

Models (`model=`), all with per-characteristic classifiers and DCH as the hashing loss:
  independent  one backbone + hash layer + classifier per characteristic, no shared
               parameter; loss structured_dch with whole=0: each sub-code is trained
               only on its own characteristic (same / different label). Each network
               sees its own training view of the batch, computed on the device in the
               jitted step (`dnh_jax/models/views.py`; `views=`):
                 texture_organ (default)  modality: 4x4-px tiles shuffled (texture, no
                                          anatomy); organ: contrast randomisation (random
                                          intensity LUT, gamma, bias field, blur, noise:
                                          anatomy, not grey levels); disease: identity
                 texture_contrast         the same, and contrast randomisation for disease
                 organ / contrast / texture / none   (see VIEWS)
               At inference, contrast views are the identity and the tile shuffle is one
               fixed permutation (views.py says why).
  structured   one shared trunk, three branches (objective 2): the same sub-code losses
               plus DCH on the whole code with full-label similarity (whole=1).
  flat         one shared trunk, one 48-bit code: DCH on full-label similarity.
`whole=X` overrides the whole-code weight (e.g. model=structured,whole=0 isolates the
effect of sharing the trunk). Invariance terms, off by default (validation did not select
them): adversary=W (a gradient-reversal adversary per sub-code predicting the other
characteristics given its own label, `losses/invariance.py`), mixstyle=P (MixStyle in the
first two convolutions, Zhou et al. ICLR 2021).

Printed table (`dnh_jax.report.untrained_combo.held_out_table`): held-out vs seen queries,
mAP@100 (relevant = the exact combination; preference rows: the preferred
characteristic) and nDCG@100 (gain = number of matched characteristics), per preference
(all, modality, organ, disease; the ranking weighs the sub-code distances by the
preference), plus the k-NN accuracy of each sub-code: the label with the largest
tie-aware vote among the 10 Hamming-nearest gallery items *of seen pairs* on that
characteristic's sub-code alone (the whole code for a flat model) - a breast-MRI query is
right on modality when its modality sub-code lands among brain MRIs.

Host augmentation (`augment=`, default false): the base config's random shifts and
intensity gain/offset jitter of training batches are off here. The jitter takes away the
modality's grey levels, the very cue a tile-shuffled modality network needs, and the views
already randomise what the other networks must not read. Chosen on the validation-transfer
pair: mean held-out sub-code k-NN accuracy 0.76 without, 0.51 with host augmentation
(published pairs), 0.48 and 0.32 (combinations=all), 3 seeds each (README's tables).

Other arguments: bits=48 (split equally), pair_loss=dch|dpsh|dsh|hashnet|csq|orthohash,
held_out=MRI/breast+CT/brain+US/chest ('+'-separated MODALITY/organ pairs),
val_held_out=auto|none|PAIRS, combinations=published|all (the seen pairs: the 5 of the
published collection, where each held-out modality is seen with a single organ, so
modality and organ are confounded in training; or all 25 modality x organ pairs but the
held-out ones, where they are not), backbone=small_cnn|alexnet|resnet18|resnet50,
stack_compute=auto|vmap|unrolled (independent model), steps=N, quick.
"""

import ml_collections

from dnh_jax import config_lib
from dnh_jax.data import held_out as held_out_lib
from dnh_jax.losses.structured import BASE_LOSSES
from dnh_jax.models.backbones import BACKBONES
from dnh_jax.models.independent import STACK_COMPUTE

MODELS = ("independent", "structured", "flat")
PAIR_LOSSES = BASE_LOSSES  # the registries' names, never a copy
BACKBONE_NAMES = tuple(sorted(BACKBONES))
DEFAULT_HELD_OUT = "MRI/breast+CT/brain+US/chest"
# The validation of transfer (`val_held_out=auto`): the first of these pairs that is not a
# test pair is kept out of training and enters the validation splits only, so views,
# terms and checkpoints are chosen on a combination training never saw - never on the
# test pairs. Each pair's modality and organ are seen in both protocols.
VAL_CANDIDATES = ("MRI/chest", "XR/brain", "CT/retina")
PREFERENCES = ("all", "modality", "organ", "disease")
# Whole-code loss weight per model when `whole=auto`: the independent model has none (no
# term may relate its sub-networks), the shared-trunk models use their objective-2 setting.
# Training views of the (modality, organ, disease) networks (dnh_jax/models/views.py).
VIEWS = {"none": (), "texture_contrast": ("patches", "contrast", "contrast"),
         "texture_organ": ("patches", "contrast", "identity"),
         "organ": ("identity", "contrast", "identity"),
         "contrast": ("identity", "contrast", "contrast"),
         "texture": ("patches", "identity", "identity")}
WHOLE_WEIGHT = {"independent": 0.0, "structured": 1.0, "flat": 1.0}


def parse_held_out(text: str) -> tuple[str, ...]:
  """'MRI/breast+CT/brain' -> ('MRI/breast', 'CT/brain'), names checked by data.held_out."""
  pairs = tuple(p.strip() for p in text.split("+") if p.strip())
  try:
    if not pairs:
      raise ValueError("no pair")
    for p in pairs:
      held_out_lib.parse_pair(p, "held_out")
  except ValueError as e:
    raise config_lib.ConfigArgError(
        f"Config argument held_out={text!r}: expected MODALITY/organ pairs joined by '+', "
        f"e.g. {DEFAULT_HELD_OUT} ({e})") from None
  return pairs


def parse_val_held_out(text: str, held_out: tuple[str, ...]) -> tuple[str, ...]:
  """'auto' -> the first VAL_CANDIDATES pair not in `held_out`; 'none' -> (); else pairs."""
  if text == "none":
    return ()
  if text == "auto":
    return tuple(p for p in VAL_CANDIDATES if p not in held_out)[:1]
  pairs = parse_held_out(text)
  if set(pairs) & set(held_out):
    raise config_lib.ConfigArgError(
        f"Config argument val_held_out={text!r} shares a pair with held_out={held_out}: "
        "the validation of transfer must not look at a test pair")
  return pairs


def parse_whole(text: str, model: str) -> float:
  """'auto' -> WHOLE_WEIGHT[model]; else a non-negative number."""
  if text == "auto":
    return WHOLE_WEIGHT[model]
  try:
    value = float(text)
  except ValueError:
    value = -1.0
  if not value >= 0:
    raise config_lib.ConfigArgError(
        f"Config argument whole={text!r}: expected 'auto' or a number >= 0")
  if model == "flat" and value == 0:
    raise config_lib.ConfigArgError(
        "Config argument whole=0 with model=flat: a flat code has no sub-codes, so it "
        "would get no hashing loss at all")
  return value


def get_config(arg=None):
  a = config_lib.parse_arg(
      arg, model="independent", bits=48, pair_loss="dch", whole="auto",
      held_out=DEFAULT_HELD_OUT, val_held_out="auto", combinations="published",
      backbone="small_cnn",
      stack_compute="auto", views="texture_organ", adversary=0.0, mixstyle=0.0,
      augment=False,
      steps=0, quick=False,
      choices={"model": MODELS, "pair_loss": PAIR_LOSSES, "backbone": BACKBONE_NAMES,
               "stack_compute": STACK_COMPUTE, "views": tuple(VIEWS),
               "combinations": ("published", "all")})
  if a.bits < 3:
    raise config_lib.ConfigArgError(f"Config argument bits={a.bits}: need >= 3 (one bit "
                                    "per characteristic at least)")
  c = config_lib.base_config()
  # Data and split depend on nothing but these fields and c.seed, so every `model=` runs
  # on exactly the same images, split and held-out queries.
  c.data.name = "medphantom"
  c.data.combinations = a.combinations
  c.data.held_out = parse_held_out(a.held_out)
  c.data.val_held_out = parse_val_held_out(a.val_held_out, c.data.held_out)
  c.data.image_size = 32
  c.data.augment = a.augment
  # "published": 200 per combination (15 seen + 9 held-out); "all": 64 per combination.
  c.data.num_examples = 4800
  # train : val query : val gallery : query : gallery of the seen combinations; held-out
  # examples all go to query : gallery (1 : 2). A larger validation split than the base
  # config's, because checkpoints are selected on it.
  c.data.split = (0.6, 0.04, 0.12, 0.08, 0.16)

  c.model.head = a.model
  c.model.backbone = a.backbone
  c.model.bits = a.bits
  c.model.segments = ()       # equal split in schema order: 48 -> 16 + 16 + 16
  c.model.classifier = True
  c.model.stack_compute = a.stack_compute
  c.model.views = VIEWS[a.views] if a.model == "independent" else ()
  c.model.view_patch = 4        # 4 x 4 px tiles: chosen on the validation-transfer pair
  c.model.mixstyle = a.mixstyle

  whole = parse_whole(a.whole, a.model)
  c.loss.name = "structured_" + a.pair_loss
  c.loss.similarity = "all"   # the whole-code term: every characteristic equal
  c.loss.classification = 1.0
  c.loss.adversary = a.adversary   # conditional sub-code adversaries (losses/invariance.py)
  c.loss.weights = ml_collections.ConfigDict(
      {"subcode": 0.0 if a.model == "flat" else 1.0, "whole": whole})

  c.train.steps = 1500
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  c.train.warmup_steps = 100
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.best_metric = "val/mAP@100"

  c.eval.ks = (10, 100)
  c.eval.relevance = "all"
  c.eval.preferences = PREFERENCES
  c.eval.query_groups = ("held_out",)
  c.eval.subcode_knn = 10
  c.report.table = "held_out"
  if a.quick:
    quick(c)
  if a.steps:
    c.train.steps = a.steps
  return c


def quick(c):
  """Small data and few steps: about two minutes on two CPU cores."""
  config_lib.shrink_for_quick(c, num_examples=1200, steps=120, warmup_steps=10, log_every=20)
