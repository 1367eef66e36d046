"""Multimorbidity hashing with a fuzzy inference layer (objective 3; papers in
dnh_jax/losses/multilabel.py).

Data: the MedPhantom multi-label chest collection (13 ChestX-ray14 findings, several per
image) by default, or NIH ChestX-ray14 from the user's copy. Model: trunk -> fuzzy
inference layer (fuzzification, rule base, Takagi-Sugeno defuzzification) -> hash layer;
`fuzzy=off` removes only the fuzzy layer (the ablation). Loss: Jaccard-fabricated target
distances with log-cosh regression (1.0) plus pairwise multi-label BCE (1.5), or the
multi-label baselines IDHN, DCH, CSQ on the same data and network. Evaluation: relevance
= number of shared findings; nDCG@100, ACG@100, wMAP@100, mAP@100 (relevant = shares at
least one finding), also per query label count (labels=1 / 2 / 3+).

Commands:
  python -m dnh_jax.main --config=configs/fuzzy_multilabel.py:bits=48
  python -m dnh_jax.main --config=configs/fuzzy_multilabel.py:bits=48,fuzzy=off
  python -m dnh_jax.main --config=configs/fuzzy_multilabel.py:loss=idhn,fuzzy=off
  python -m dnh_jax.main --config=configs/fuzzy_multilabel.py:data=chestxray14 \\
      --config.data.manual_dir=/data/chestxray14
Quick smoke run (a minute or two on two CPU cores):
  python -m dnh_jax.main --config=configs/fuzzy_multilabel.py:quick
The closing-note table of issue 6 (2-5 minutes per run on two CPU cores):
  python -m dnh_jax.main --config=configs/fuzzy_multilabel.py:moderate,bits=48[,fuzzy=off]
Rule dump and membership plot of a trained fuzzy run:
  python -m dnh_jax.report.fuzzy_report --workdir=W --findings=effusion,edema
Arguments: bits=16|32|48|64, fuzzy=on|off, loss=jaccard|idhn|dch|csq,
data=medphantom|chestxray14, backbone=default|small_cnn|alexnet|resnet18|resnet50
(default: small_cnn on MedPhantom, AlexNet as published on ChestX-ray14),
membership=gaussian|bell, tnorm=product|softmin, defuzz=tsk|centroid, rules=R,
steps=N (0: the data set's default), moderate (MedPhantom 4,000 images at 32 px, 800
steps), quick.

Expected: on ChestX-ray14 with AlexNet the published Jaccard method (no fuzzy layer)
reaches nDCG@100 .632/.636/.643/.636 and wMAP .457/.460/.477/.466 at 16/32/48/64 bits;
`moderate` on MedPhantom (test nDCG@100 / ACG@100 / wMAP@100, mean of seeds 0-2, 16 bits;
48 bits): Jaccard + fuzzy .468/.271/.318; .490/.281/.331. Jaccard without the fuzzy
layer .391/.233/.279; .425/.249/.304. The same layer with a single rule (rules=1, no rule
base: only the normalised 8-input bottleneck) .475/.274/.322; .473/.267/.314, so the gain
comes from the bottleneck, not from the rules. Seed 0 only, nDCG@100 at 16; 48 bits:
CSQ .407; .423, DCH .361; .394, IDHN .125; .150 (IDHN collapses: over half the images
carry no finding and its soft similarity makes every pair with such an image dissimilar).
"""

from dnh_jax import config_lib
from dnh_jax.models.backbones import BACKBONES

LOSS_NAMES = ("jaccard", "idhn", "dch", "csq")
DATA_NAMES = ("medphantom", "chestxray14")
BACKBONE_NAMES = ("default",) + tuple(sorted(BACKBONES))  # "default": the data's own


def get_config(arg=None):
  a = config_lib.parse_arg(
      arg, bits=48, fuzzy=True, loss="jaccard", data="medphantom", backbone="default",
      membership="gaussian", tnorm="product", defuzz="tsk", rules=16, steps=0,
      moderate=False, quick=False,
      choices={"bits": (16, 32, 48, 64), "loss": LOSS_NAMES, "data": DATA_NAMES,
               "backbone": BACKBONE_NAMES, "membership": ("gaussian", "bell"),
               "tnorm": ("product", "softmin"), "defuzz": ("tsk", "centroid")})
  if a.rules < 1 or a.steps < 0:
    raise config_lib.ConfigArgError(
        f"Config arguments rules={a.rules} must be >= 1 and steps={a.steps} >= 0")
  c = config_lib.base_config()

  c.data.multilabel = True
  if a.data == "chestxray14":
    c.data.name = "chestxray14"      # needs --config.data.manual_dir
    c.data.image_size = 224
    c.train.steps = 20000
    c.train.batch_size = 128
    backbone = "alexnet"
  else:
    c.data.name = "medphantom"
    c.data.image_size = 64
    c.data.num_examples = 6000
    c.train.steps = 3000
    backbone = "small_cnn"
  c.model.backbone = backbone if a.backbone == "default" else a.backbone

  m = c.model
  m.head = "flat"
  m.bits = a.bits
  m.classifier = True          # the Jaccard loss's BCE term reads outputs["logits"]
  m.fuzzy = a.fuzzy
  m.fuzzy_rules = a.rules
  m.fuzzy_inputs = 8
  m.fuzzy_membership = a.membership
  m.fuzzy_tnorm = a.tnorm
  m.fuzzy_defuzzifier = a.defuzz
  m.fuzzy_output_dim = 0       # = trunk feature width, so the hash layer's input width
                               # is the same with and without the fuzzy layer
  # Classic first-order TSK on the M inputs: on MedPhantom (moderate, 48 bits, seeds 0-2)
  # validation nDCG@100 .579 against .535 with consequents on the 256 trunk features,
  # with 41k instead of 1.1M layer parameters (the trunk and hash layer have 0.46M).
  m.fuzzy_consequent_inputs = "inputs"
  m.fuzzy_softmin_temperature = 0.1
  m.fuzzy_init_width = 0.5
  m.fuzzy_normalize_inputs = True

  c.loss.name = a.loss
  c.loss.similarity = "shared"
  c.loss.classification = 0.0  # jaccard carries its own BCE (weight 1.5)
  if a.loss == "jaccard":
    c.loss.weights.regression = 1.0
    c.loss.weights.classification = 1.5

  c.train.learning_rate = 1e-3
  c.train.schedule = "cosine"
  c.train.warmup_steps = 100
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.best_metric = "val/nDCG@100"

  c.eval.relevance = "shared"
  c.eval.ks = (10, 100)
  c.eval.query_groups = ("label_count",)
  if a.moderate:
    moderate(c)
  if a.quick:
    quick(c)
  if a.steps:  # an explicit step count wins over every preset
    c.train.steps = a.steps
  return c


def moderate(c):
  """A MedPhantom run of 2-5 minutes on two CPU cores (the issue-6 closing-note table)."""
  c.data.image_size = 32
  c.data.num_examples = 4000
  c.train.steps = 800
  c.train.log_every = 100
  c.train.eval_every = 200
  c.train.checkpoint_every = 200


def quick(c):
  """Shrinks data and steps so a run takes a minute or two on two CPU cores."""
  config_lib.shrink_for_quick(c, num_examples=600, steps=30, warmup_steps=5, log_every=10)
  c.model.fuzzy_rules = min(c.model.fuzzy_rules, 8)
