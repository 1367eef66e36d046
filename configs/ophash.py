"""OPHash on MedPhantom: organ-and-pathology hashing (objective 1; papers in
dnh_jax/losses/ophash.py).

Command (published settings, 48 bits):
  python -m dnh_jax.main --config=configs/ophash.py:bits=48
Quick smoke run (a minute or two on two CPU cores):
  python -m dnh_jax.main --config=configs/ophash.py:quick
Ablation of each term at 16 bits:
  python -m dnh_jax.ablate --config=configs/ophash.py --base=bits=16 \\
      --variants='base;classification=off;semantic=off;relational=off;adversarial=on;target=on,quantization=on'

Arguments:
  bits=16|32|48|64, backbone=small_cnn|alexnet|resnet18|resnet50, quick, steps=N (0: the
  default), lr=X;
  term switches (on/off): classification (organ cross-entropy), semantic (J1), relational
  (J2), adversarial (pair discriminator, gradient reversal), target (three-level target
  distance D = 0, K/2, K), quantization (log cosh(|h| - 1));
  term weights: a1 (J1, 0.5), beta (J2, 0.5), adv_weight (0.1), target_weight (5.0),
  quant_weight (0.1).
Defaults = the published OPHash: organ classification + J1 + J2, gamma = 1; the
adversary and the three-level variant are off (switch them on to compare).

The published comparison of objective 1 (the author's table at 16 bits: OPHash 0.786, DCH
0.632, HashNet 0.443 mAP@100, with AlexNet), here with the small CNN at 64 px on MedPhantom's
published collection, 2,000 steps, the same evaluation for all three (relevance
organ_disease, checkpoint on val/nDCG@100); 3 seeds, mean ± sample std:
  python -m dnh_jax.ablate --config=configs/ophash.py --base=bits=16 --seeds=0,1,2 \\
      --variants='base;configs/baseline.py:loss=dch;configs/baseline.py:loss=hashnet' \\
      --set='eval.relevance=organ_disease;train.best_metric=val/nDCG@100'
(and --base=bits=48)

  | method  | mAP@100 16 bits | mAP@100 48 bits | nDCG@100 16 / 48 | mAP@1000 16 / 48 |
  |---------|-----------------|-----------------|------------------|------------------|
  | OPHash  | 0.781 ± 0.017   | 0.807 ± 0.012   | 0.858 / 0.878    | 0.759 / 0.790    |
  | DCH     | 0.707 ± 0.041   | 0.791 ± 0.028   | 0.805 / 0.853    | 0.649 / 0.719    |
  | HashNet | 0.428 ± 0.028   | 0.503 ± 0.053   | 0.637 / 0.681    | 0.397 / 0.455    |

At 16 bits the published order holds on every seed, but OPHash leads DCH by 0.07, not 0.15
(our DCH is stronger than the published one; OPHash and HashNet are close to the published
figures). At 48 bits OPHash and DCH are level: 0.016 apart, within the spread, and DCH is
ahead on two of the three seeds. The published network (AlexNet at 224 px) and 32/64
bits are not run: AlexNet at 224 px trains at 17 ex/s on two CPU cores (3.8 s a step of
64; an 8-step run), so a 2,000-step run takes about 2 h and the 36 runs (3 methods x 4
code lengths x 3 seeds) about 77 h. On a GPU:
  python -m dnh_jax.ablate --config=configs/ophash.py --sweep=bits=16,32,48,64 \\
      --variants='base;configs/baseline.py:loss=dch;configs/baseline.py:loss=hashnet' \\
      --base=backbone=alexnet --seeds=0,1,2 --workdir=workdirs/objective1_alexnet \\
      --set='eval.relevance=organ_disease;train.best_metric=val/nDCG@100;data.image_size=224'

Evaluation ("organ_disease" rule of dnh_jax.evaluation.relevance): graded relevance 2
(same organ and disease) / 1 (same organ only) / 0, so nDCG@k uses grades 2/1/0 with the
ideal DCG over the whole gallery; mAP@k counts grade 2 as relevant. The checkpoint is
selected on val/nDCG@100 (never on test). Training logs the mean Hamming distance of
type-1/2/3 pairs as train/dist_type1..3 (expected order: type1 < type2 < type3).
"""

import ml_collections

from dnh_jax import config_lib
from dnh_jax.models.backbones import BACKBONES

BACKBONE_NAMES = tuple(sorted(BACKBONES))  # the registry's names, never a copy


def get_config(arg=None):
  a = config_lib.parse_arg(
      arg, bits=48, backbone="small_cnn", quick=False, steps=0, lr=0.0,
      classification=True, semantic=True, relational=True, adversarial=False, target=False,
      quantization=False, a1=0.5, beta=0.5, adv_weight=0.1, target_weight=5.0,
      quant_weight=0.1,
      choices={"bits": (16, 32, 48, 64), "backbone": BACKBONE_NAMES})
  c = config_lib.base_config()
  c.data.name = "medphantom"
  c.data.combinations = "published"  # 4 organs, 13 diseases, 15 combinations
  c.model.backbone = a.backbone
  c.model.head = "flat"
  c.model.bits = a.bits
  c.model.classifier = True  # the organ classifier reads the trunk features

  c.loss.name = "ophash"
  # The organ classification is OPHash's own term (organ only); the shared classifier
  # term would train every characteristic's classifier.
  c.loss.classification = 0.0
  c.loss.quantization = a.quant_weight if a.quantization else 0.0
  c.loss.weights = ml_collections.ConfigDict({
      "organ_classification": 1.0 if a.classification else 0.0,
      "semantic": a.a1 if a.semantic else 0.0,
      "relational": a.beta if a.relational else 0.0,
      "adversarial": a.adv_weight if a.adversarial else 0.0,
      # log cosh((D - d) / K) has gradients ~ 1/K per bit of error, several times smaller
      # than the Cauchy terms' 1/(1 + d); weight 5 puts them on a par at 16-32 bits.
      "target_distance": a.target_weight if a.target else 0.0,
      "gamma": 1.0,
      # The discriminator learns for a while before the encoder feels its reversed
      # gradient at full strength (DANN ramp).
      "adversarial_ramp": 500.0,
  })

  c.eval.relevance = "organ_disease"
  c.train.best_metric = "val/nDCG@100"
  return config_lib.set_run_length(c, quick=quick if a.quick else None, steps=a.steps,
                                   lr=a.lr)


def quick(c):
  """Small data, images and step count: a run takes a minute or two on two CPU cores."""
  config_lib.shrink_for_quick(c, num_examples=800, steps=60, warmup_steps=5, log_every=10)
  c.loss.weights.adversarial_ramp = 20.0
