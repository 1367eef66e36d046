"""Config helpers: the shared base config and strict typed config arguments.

Config files call `parse_arg(arg, bits=16, quick=False, ...)`: the keyword defaults fix
both the valid keys and their types, so `:bits=3x` or `:quikc` fail at load time with an
error listing what is valid (big_vision's parse_arg, made strict).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping, Sequence

import ml_collections

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


class ConfigArgError(ValueError):
  """A config argument string (`--config=file.py:ARGS`) that cannot be parsed."""


def _coerce(key: str, text: str, default: Any, choices: Sequence[Any] | None):
  if isinstance(default, bool):
    low = text.lower()
    if low in _TRUE:
      value = True
    elif low in _FALSE:
      value = False
    else:
      raise ConfigArgError(
          f"Config argument {key}={text!r}: expected a boolean, one of {_TRUE + _FALSE}")
  elif isinstance(default, int):
    try:
      value = int(text)
    except ValueError:
      raise ConfigArgError(f"Config argument {key}={text!r}: expected an integer") from None
  elif isinstance(default, float):
    try:
      value = float(text)
    except ValueError:
      raise ConfigArgError(f"Config argument {key}={text!r}: expected a number") from None
  else:
    value = text
  if choices is not None and value not in choices:
    raise ConfigArgError(
        f"Config argument {key}={text!r}: expected one of {list(choices)}")
  return value


def parse_arg(arg: str | None, *, choices: Mapping[str, Sequence[Any]] | None = None,
              **defaults) -> ml_collections.ConfigDict:
  """Parses `key=value,flag,...` against typed defaults.

  Args:
    arg: the text after ':' in `--config=file.py:ARG` (None or '' for defaults).
    choices: optional valid values per key.
    **defaults: every valid key with its default; the default's type is the key's type.
      A bare key (`quick`) sets a boolean to True.

  Returns:
    A ConfigDict with one entry per key of `defaults`.

  Raises:
    ConfigArgError: unknown key, bad boolean/number, or a value outside `choices`; the
      message names the key and lists what is valid.
  """
  choices = dict(choices or {})
  for key in choices:
    if key not in defaults:
      raise ValueError(f"choices given for unknown key {key!r}")
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, text = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ConfigArgError(
          f"Unknown config argument {key!r}; valid arguments: {sorted(defaults)}")
    if not sep:
      if not isinstance(defaults[key], bool):
        raise ConfigArgError(f"Config argument {key!r} needs a value ({key}=...)")
      out[key] = True
      continue
    out[key] = _coerce(key, text.strip(), defaults[key], choices.get(key))
  return ml_collections.ConfigDict(out)


def base_config() -> ml_collections.ConfigDict:
  """The shared base every experiment config starts from (override a few fields).

  Sections: data (what to read and how to split it), model (backbone and heads), loss
  (objective and weights), train (optimizer, steps, intervals), eval (metrics and
  preferences), mesh (device layout). Field meanings are documented inline.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0                       # seed of the split, initialisation, batches and step keys

  c.data = d = ml_collections.ConfigDict()
  d.name = "medphantom"            # key of dnh_jax.data.DATASETS
  d.data_dir = ""                  # TFDS data_dir; "" = $DNH_DATA_DIR or ~/.cache/dnh_jax/tfds
  d.manual_dir = ""                # for real-data builders: where the user's files live
  d.image_size = 64                # images are resized to image_size x image_size x 1
  d.num_examples = 6000            # MedPhantom: examples rendered in total
  d.difficulty = 1.0               # MedPhantom: scales noise, anatomy variation, 1/contrast
  d.combinations = "published"     # MedPhantom: "published" | "all" | explicit list
  d.held_out = ()                  # "MODALITY/organ" pairs never seen in train/val
  d.val_held_out = ()              # pairs never in train or test: val splits only (transfer)
  d.multilabel = False             # MedPhantom: multi-label chest X-ray collection
  d.subsets = ()                   # MedMNIST: which subsets to read
  # Split fractions train : val_query : val_gallery : query : gallery (the papers' 6:1:2:1
  # becomes train 0.6, val 0.1 split 1:4 into query/gallery, test 0.3 split 1:2).
  d.split = (0.6, 0.02, 0.08, 0.1, 0.2)   # fractions, in the order above
  d.augment = True                 # random flips / shifts of training batches
  d.dataset_seed = 0               # MedPhantom: seed of the rendered images (splits use seed)
  d.label_map = ""                 # DICOM: JSON file mapping tag values to vocabulary names
  d.strict_labels = False          # DICOM: an unmapped label is an error, not a skipped file

  c.model = m = ml_collections.ConfigDict()
  m.backbone = "small_cnn"         # key of dnh_jax.models.BACKBONES
  m.head = "flat"                  # "flat" | "structured" | "independent"
  m.bits = 48                      # total code length K
  m.segments = ()                  # per-characteristic sub-code lengths (structured codes)
  m.classifier = True              # classifier heads on the characteristics
  m.fuzzy = False                  # fuzzy inference layer before the hash layer
  m.fuzzy_rules = 16               # fuzzy layer: rules per layer
  m.fuzzy_inputs = 8               # fuzzy layer: features it reads (projected)
  m.fuzzy_membership = "gaussian"  # fuzzy layer: "gaussian" | "bell" membership functions
  m.dtype = "float32"              # compute dtype, key of dnh_jax.models.DTYPES
  m.init_from = ""                 # local weights: torchvision/timm .pth/.safetensors or a run
  m.stack_compute = "auto"         # independent head: "auto" | "vmap" | "unrolled"
  m.backbones = ()                 # independent head: one backbone name per characteristic
  m.views = ()                     # independent head: training view per network (models/views.py)
  m.view_patch = 8                 # tile side of the "patches" view
  m.mixstyle = 0.0                 # MixStyle probability in the early layers (small_cnn; 0: off)
  m.branch_width = 256             # structured head: hidden width of each branch
  m.code_classifier = ""           # "": none; else a similarity rule whose classes a linear
                                   # classifier on sign(codes) predicts (GreedyHash needs it)

  c.loss = l = ml_collections.ConfigDict()
  l.name = "dpsh"                  # key of dnh_jax.losses.LOSSES
  l.similarity = "all"             # pair similarity rule for flat baselines
  l.quantization = 0.0             # weight of the quantization penalty
  l.classification = 0.0           # weight of classifier cross-entropy
  l.adversary = 0.0                # weight of the conditional sub-code adversaries (invariance)
  l.adversary_ramp = 500           # steps of DANN's reversal-scale ramp (0: scale 1 at once)
  l.adversary_width = 64           # hidden units of each adversary
  l.organ = "organ"                # OPHash: the characteristic of its organ terms
  l.disease = "disease"            # OPHash: the characteristic of its disease terms
  l.weights = ml_collections.ConfigDict()   # loss-specific weights

  c.train = t = ml_collections.ConfigDict()
  t.steps = 2000                   # optimisation steps (0: evaluate only)
  t.batch_size = 64                # global batch size
  t.optimizer = "adam"             # key of dnh_jax.train.OPTIMIZERS: adam | adamw | sgd
  t.learning_rate = 1e-3           # peak learning rate (after warmup)
  t.schedule = "cosine"            # "constant" | "cosine" | "step"
  t.decay_every = 1000             # "step" schedule: steps between learning-rate decays
  t.decay_rate = 0.4               # "step" schedule: factor applied at each decay
  t.warmup_steps = 100             # linear warmup from 0
  t.weight_decay = 0.0             # decoupled (adamw) or L2 (sgd); "adam" refuses > 0
  t.grad_clip = 1.0                # global gradient-norm clip (0: none)
  t.log_every = 50                 # steps between training-metric rows
  t.eval_every = 500               # steps between validations (and at the end)
  t.checkpoint_every = 500         # steps between checkpoints of last/ (and at the end)
  t.keep_checkpoints = 2           # states kept in last/
  t.best_metric = "val/mAP@100"    # checkpoint selection, never on test
  t.best_mode = "max"              # "max" | "min": whether best_metric is higher- or lower-better
  t.stop_after_steps = 0           # > 0: save and exit after this many steps (job slices)

  c.eval = e = ml_collections.ConfigDict()
  e.ks = (10, 100, 1000)           # cutoffs k of mAP@k, nDCG@k, ACG@k, wMAP@k
  e.relevance = "all"              # relevance rule; see dnh_jax.evaluation.relevance
  e.preferences = ()               # named preferences for structured codes
  e.ties = "index"                 # order inside equal distances; evaluation.metrics.TIES
  e.query_groups = ()              # names from dnh_jax.evaluation.groups.QUERY_GROUPS
  e.subcode_knn = 0                # > 0: k-NN accuracy of each sub-code's characteristic
  e.batch_size = 256               # images per encoding batch

  c.report = ml_collections.ConfigDict()
  c.report.table = ""              # "" generic results table | "held_out" (untrained combos)
  c.report.html = True             # write <workdir>/report.html + figures at the end of a run

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1                 # devices on the data axis (-1: all)
  return c


def _from_json_value(value: Any) -> Any:
  # config.json holds tuples as lists; every sequence field of a config is a tuple.
  if isinstance(value, Mapping):
    return ml_collections.ConfigDict({k: _from_json_value(v) for k, v in value.items()})
  if isinstance(value, list):
    return tuple(_from_json_value(v) for v in value)
  return value


def config_from_json(text: str | Mapping[str, Any], *, source: str = "config.json"
                     ) -> ml_collections.ConfigDict:
  """The config a run was trained with, read back from the `config.json` it wrote.

  `config_from_json(config.to_json_best_effort()).to_dict() == config.to_dict()` for every
  config of `configs/` (tested): lists become tuples again, sections ConfigDicts.

  Args:
    text: the JSON text, or the already parsed dict.
    source: the file name, for error messages.

  Raises:
    ValueError: naming `source`, when it is not a JSON object.
  """
  try:
    data = json.loads(text) if isinstance(text, (str, bytes)) else text
  except json.JSONDecodeError as e:
    raise ValueError(f"{source}: not valid JSON ({e})") from None
  if not isinstance(data, Mapping):
    raise ValueError(f"{source}: expected a JSON object (a config), got {type(data).__name__}")
  return _from_json_value(data)


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """`config_from_json` of a file (e.g. `<workdir>/config.json`)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist; expected the config.json a training "
                            "run writes in its workdir")
  with open(path, encoding="utf-8") as f:
    return config_from_json(f.read(), source=path)


def default_workdir(config_arg: str) -> str:
  """`configs/ophash.py:bits=32,quick` -> `workdirs/ophash-bits=32,quick`."""
  path, _, args = config_arg.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  if args:
    name += "-" + re.sub(r"[^A-Za-z0-9_.,=+>-]", "_", args)
  return os.path.join("workdirs", name)


def shrink_for_quick(c: ml_collections.ConfigDict, *, num_examples: int, steps: int,
                     warmup_steps: int, log_every: int) -> ml_collections.ConfigDict:
  """The shared part of every config's `quick` variant: small 32 px data, batch 32, few
  steps, validation and a checkpoint halfway and at the end, metrics at k = 10 and 100."""
  c.data.num_examples = num_examples
  c.data.image_size = 32
  c.train.steps = steps
  c.train.batch_size = 32
  c.train.warmup_steps = warmup_steps
  c.train.log_every = log_every
  c.train.eval_every = steps // 2
  c.train.checkpoint_every = steps // 2
  c.eval.ks = (10, 100)
  return c


def set_run_length(c: ml_collections.ConfigDict, *, quick=None, steps: int = 0,
                   lr: float = 0.0) -> ml_collections.ConfigDict:
  """The shared tail of a config file: its `quick(c)` preset when given, then an explicit
  `steps=N` / `lr=X` argument, which wins over every preset (0: keep)."""
  if quick is not None:
    quick(c)
  if steps:
    c.train.steps = steps
  if lr:
    c.train.learning_rate = lr
  return c
