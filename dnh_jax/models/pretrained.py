"""Backbone weights from a local file: torchvision / timm state dicts or another run.

`model.init_from=PATH` starts the backbone(s) from weights on disk instead of a random
initialisation; nothing is ever downloaded. PATH is one of:

* a PyTorch state dict, ``.pth`` / ``.pt`` (read with ``torch.load``, so PyTorch must be
  installed) or ``.safetensors`` (read here with NumPy, no dependency), saved from
  torchvision's or timm's ``resnet18``, ``resnet50`` or torchvision's ``alexnet``
  (timm's ResNets use torchvision's parameter names). The ImageNet classifier (``fc``,
  ``classifier.6``) is ignored;
* a dnh_jax workdir or Orbax checkpoint folder (``<workdir>``, ``<workdir>/checkpoints/
  best``, or one step folder of it): every model parameter and batch statistic of that run
  whose name and shape this run shares is copied (fine-tuning from another run); the
  backbone must be there in full.

The mapping from PyTorch names is explicit per architecture (`TORCH_NAMES`): kernels
OIHW -> HWIO, dense weights [out, in] -> [in, out], batch norm weight/bias -> scale/bias
and running_mean/var -> the "batch_stats" mean/var. A 3-channel (RGB) first convolution
is mapped onto our 1-channel images by summing its kernel over the colour axis, the usual
practice for grey-scale medical images: on a grey image repeated over three channels the
two networks then give the same features. AlexNet's fc6 reads the C, H, W flattening of
PyTorch; its rows are permuted to our H, W, C order (so fc6 loads only at the input size
that gives a 6x6 last map, e.g. 224 px). Any missing name, leftover name or shape mismatch
raises a one-line ValueError naming the parameter.

For the independent head, the same weights are loaded into every copy of the stack.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator

import numpy as np

# Source names the loader drops on purpose: the ImageNet classifier and BN counters.
IGNORED_SUFFIXES = ("num_batches_tracked",)
IGNORED_PREFIXES = {"resnet18": ("fc.",), "resnet50": ("fc.",), "alexnet": ("classifier.6.",)}

# (flax path inside the backbone, collection, torch name, kind); see _convert for kinds.
Entry = tuple[tuple[str, ...], str, str, str]


def _conv_entries(flax: tuple[str, ...], torch: str, bias: bool) -> list[Entry]:
  out = [(flax + ("kernel",), "params", f"{torch}.weight", "conv")]
  if bias:
    out.append((flax + ("bias",), "params", f"{torch}.bias", "vector"))
  return out


def _bn_entries(flax: tuple[str, ...], torch: str) -> list[Entry]:
  return [(flax + ("scale",), "params", f"{torch}.weight", "vector"),
          (flax + ("bias",), "params", f"{torch}.bias", "vector"),
          (flax + ("mean",), "batch_stats", f"{torch}.running_mean", "vector"),
          (flax + ("var",), "batch_stats", f"{torch}.running_var", "vector")]


def _resnet_names(stage_sizes: tuple[int, ...], convs_per_block: int) -> list[Entry]:
  """torchvision ResNet (conv1, bn1, layerI.J.convK/bnK, downsample.0/1) -> ours
  (stem, stem_norm, stageI_blockJ/Conv_K / BatchNorm_K, proj, proj_norm)."""
  out = _conv_entries(("stem",), "conv1", False) + _bn_entries(("stem_norm",), "bn1")
  for i, blocks in enumerate(stage_sizes):
    for j in range(blocks):
      ours, theirs = f"stage{i}_block{j}", f"layer{i + 1}.{j}"
      for k in range(convs_per_block):
        out += _conv_entries((ours, f"Conv_{k}"), f"{theirs}.conv{k + 1}", False)
        out += _bn_entries((ours, f"BatchNorm_{k}"), f"{theirs}.bn{k + 1}")
      # The projection exists where the block changes shape; optional, checked against
      # the model's own tree in `_backbone_entries`.
      out += _conv_entries((ours, "proj"), f"{theirs}.downsample.0", False)
      out += _bn_entries((ours, "proj_norm"), f"{theirs}.downsample.1")
  return out


def _alexnet_names() -> list[Entry]:
  """torchvision AlexNet (features.0/3/6/8/10, classifier.1/4) -> conv1..5, fc6, fc7."""
  out = []
  for ours, index in zip(("conv1", "conv2", "conv3", "conv4", "conv5"), (0, 3, 6, 8, 10)):
    out += _conv_entries((ours,), f"features.{index}", True)
  out += [(("fc6", "kernel"), "params", "classifier.1.weight", "dense_from_chw"),
          (("fc6", "bias"), "params", "classifier.1.bias", "vector"),
          (("fc7", "kernel"), "params", "classifier.4.weight", "dense"),
          (("fc7", "bias"), "params", "classifier.4.bias", "vector")]
  return out


# model.backbone -> the list of (our path, collection, PyTorch name, kind) of its weights.
TORCH_NAMES: dict[str, Callable[[], list[Entry]]] = {
    "resnet18": lambda: _resnet_names((2, 2, 2, 2), 2),
    "resnet50": lambda: _resnet_names((3, 4, 6, 3), 3),
    "alexnet": _alexnet_names,
}


# ----------------------------------------------------------------------------- reading

_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
                       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
                       "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file -> {name: array} (float16/32/64 and integer tensors; bfloat16 is
  widened to float32). The format: an 8-byte little-endian header length, a JSON header
  {name: {dtype, shape, data_offsets}}, then the raw little-endian bytes."""
  with open(path, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
    data = f.read()
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    start, end = info["data_offsets"]
    raw = data[start:end]
    if info["dtype"] == "BF16":
      bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
      out[name] = bits.view(np.float32).reshape(info["shape"])
    elif info["dtype"] in _SAFETENSORS_DTYPES:
      dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
      out[name] = np.frombuffer(raw, dtype).reshape(info["shape"])
    else:
      raise ValueError(f"model.init_from={path}: tensor {name!r} has unsupported dtype "
                       f"{info['dtype']}")
  return out


def read_torch(path: str) -> dict[str, np.ndarray]:
  """A torch.save'd state dict (.pth/.pt) -> {name: array}; needs PyTorch installed."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError(f"model.init_from={path}: reading .pth needs PyTorch (pip install "
                     "torch), or save the weights as .safetensors") from None
  obj = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model"):  # training checkpoints wrap the state dict
    if isinstance(obj, dict) and set(obj) >= {key} and isinstance(obj[key], dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise ValueError(f"model.init_from={path}: expected a state dict, got {type(obj).__name__}")
  return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in obj.items() if hasattr(v, "numpy")}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """.safetensors / .pth / .pt -> {PyTorch name: array}, a "module." prefix removed."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    tensors = read_safetensors(path)
  elif ext in (".pth", ".pt", ".bin"):
    tensors = read_torch(path)
  else:
    raise ValueError(f"model.init_from={path}: expected a .safetensors, .pth or .pt file, "
                     "or a dnh_jax workdir / Orbax checkpoint folder")
  return {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}


# ----------------------------------------------------------------------------- mapping

def _get(tree: dict, path: tuple[str, ...]):
  for p in path:
    if not isinstance(tree, dict) or p not in tree:
      return None
    tree = tree[p]
  return tree


def _convert(value: np.ndarray, kind: str, target_shape: tuple[int, ...], name: str,
             ours: str) -> np.ndarray:
  """One PyTorch tensor -> our layout, with shape checks naming both parameters."""
  def mismatch(got):
    return ValueError(f"model.init_from: parameter {ours} needs shape {tuple(target_shape)} "
                      f"but {name} has shape {tuple(value.shape)} (-> {tuple(got)})")

  value = np.asarray(value, np.float32)
  if kind == "conv":                       # [O, I, kh, kw] -> [kh, kw, I, O]
    if value.ndim != 4:
      raise mismatch(value.shape)
    if value.shape[1] == 3 and target_shape[2] == 1:
      value = value.sum(axis=1, keepdims=True)   # RGB stem -> grey images
    value = value.transpose(2, 3, 1, 0)
  elif kind == "dense":                    # [out, in] -> [in, out]
    if value.ndim != 2:
      raise mismatch(value.shape)
    value = value.T
  elif kind == "dense_from_chw":           # fc6: rows in C, H, W order -> H, W, C
    if value.ndim != 2 or value.shape[1] != target_shape[0] or target_shape[0] % 256:
      raise ValueError(f"model.init_from: parameter {ours} needs shape {tuple(target_shape)} "
                       f"but {name} has shape {tuple(value.shape)}; AlexNet's fc6 loads "
                       "only at an input size whose last map is 6x6x256 (e.g. 224 px)")
    side = int(round((target_shape[0] // 256) ** 0.5))
    value = value.reshape(value.shape[0], 256, side, side).transpose(2, 3, 1, 0)
    value = value.reshape(-1, value.shape[-1])
  if tuple(value.shape) != tuple(target_shape):
    raise mismatch(value.shape)
  return value


def _backbone_entries(arch: str, params: dict, where: str) -> list[Entry]:
  """The entries of `arch` the model really has (optional projections dropped), after
  checking that every parameter of the model's backbone is covered."""
  if arch not in TORCH_NAMES:
    raise ValueError(f"model.init_from: {where} is a {arch!r} backbone; PyTorch weights load "
                     f"only into {sorted(TORCH_NAMES)}")
  entries = [e for e in TORCH_NAMES[arch]() if _get(params, e[0][:-1]) is not None]
  covered = {e[0] for e in entries if e[1] == "params"}
  for path in _leaf_paths(params):
    if path not in covered:
      raise ValueError(f"model.init_from: parameter {where}/{'/'.join(path)} has no PyTorch "
                       f"counterpart in the {arch} mapping")
  return entries


def _leaf_paths(tree: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _leaf_paths(v, prefix + (k,))
    else:
      yield prefix + (k,)


def _set(tree: dict, path: tuple[str, ...], value):
  for p in path[:-1]:
    tree = tree[p]
  tree[path[-1]] = value


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)


def load_torch_backbone(tensors: dict[str, np.ndarray], arch: str, params: dict,
                        batch_stats: dict, *, where: str = "backbone",
                        stacked: int = 0) -> tuple[dict, dict]:
  """PyTorch state dict -> new (params, batch_stats) of one backbone.

  Args:
    tensors: {PyTorch name: array} (`read_state_dict`).
    arch: the backbone's name in `TORCH_NAMES`.
    params, batch_stats: the backbone's initialised trees (arrays), which fix the target
      shapes; with `stacked` = C > 0 each leaf has a leading axis C (independent head) and
      every copy receives the same weights.
    where: the backbone's place in the model, for error messages.

  Returns:
    (params, batch_stats) with every leaf replaced.

  Raises:
    ValueError: a missing or leftover PyTorch name, or a shape mismatch (one line).
  """
  params, batch_stats = _to_numpy(params), _to_numpy(batch_stats)
  trees = {"params": params, "batch_stats": batch_stats}
  used = set()
  for path, collection, name, kind in _backbone_entries(arch, params, where):
    target = _get(trees[collection], path)
    ours = f"{where}/{'/'.join(path)}"
    if target is None:
      raise ValueError(f"model.init_from: the model has no {collection} {ours} for {name}")
    if name not in tensors:
      raise ValueError(f"model.init_from: parameter {ours} needs {name!r}, which the file "
                       f"does not have (is it a {arch} state dict?)")
    shape = target.shape[1:] if stacked else target.shape
    value = _convert(tensors[name], kind, shape, name, ours)
    if stacked:
      value = np.broadcast_to(value, (stacked, *value.shape))
    _set(trees[collection], path, np.array(value, target.dtype))
    used.add(name)
  ignored = IGNORED_PREFIXES.get(arch, ())
  left = sorted(k for k in tensors if k not in used and not k.endswith(IGNORED_SUFFIXES)
                and not k.startswith(ignored))
  if left:
    raise ValueError(f"model.init_from: {len(left)} tensors of the file have no place in "
                     f"the {arch} backbone, e.g. {left[:3]} (is it a {arch} state dict?)")
  return params, batch_stats


# ----------------------------------------------------------------------------- Orbax

def _steps(path: str) -> list[int]:
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _orbax_step_dir(path: str) -> str:
  """A workdir, a manager folder (numeric step sub-folders) or a step folder -> the step
  folder to read (best/ before last/, newest step)."""
  for sub in ("checkpoints/best", "checkpoints/last", "best", "last", ""):
    steps = _steps(os.path.join(path, sub))
    if steps:
      return os.path.join(path, sub, str(steps[-1]))
  return path


def read_orbax_state(path: str) -> dict:
  """The raw state tree {"params": {"model": ...}, "batch_stats": ...} of a checkpoint."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  step_dir = os.path.abspath(_orbax_step_dir(path))
  item = os.path.join(step_dir, "default")
  item = item if os.path.isdir(item) else step_dir
  try:
    return ocp.StandardCheckpointer().restore(item)
  except Exception as e:  # pylint: disable=broad-except  (Orbax raises many kinds)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ValueError(f"model.init_from={path}: not a readable Orbax checkpoint "
                     f"({type(e).__name__}: {first})") from None


def _copy_matching(source: dict, target: dict, required: tuple[str, ...], prefix: str,
                   loaded: list[str]) -> dict:
  """target with each leaf replaced by source's leaf of the same path and shape; a
  backbone leaf (top-level key in `required`) must exist with the same shape."""
  out = {}
  for k, v in target.items():
    name = f"{prefix}/{k}" if prefix else k
    must = not prefix and k in required or prefix.split("/")[0] in required
    s = source.get(k) if isinstance(source, dict) else None
    if isinstance(v, dict):
      out[k] = _copy_matching(s if isinstance(s, dict) else {}, v, required, name, loaded)
      continue
    if s is not None and tuple(np.shape(s)) == tuple(np.shape(v)):
      out[k] = np.asarray(s, np.asarray(v).dtype)
      loaded.append(name)
    elif must:
      got = "is missing" if s is None else f"has shape {tuple(np.shape(s))}"
      raise ValueError(f"model.init_from: parameter {name} (shape {tuple(np.shape(v))}) "
                       f"{got} in the checkpoint")
    else:
      out[k] = np.asarray(v)
  return out


# ----------------------------------------------------------------------------- entry

def backbone_places(model_params: dict, model_cfg) -> list[tuple[str, str, bool]]:
  """(key in params["model"], backbone name, stacked?) of every backbone of the model.

  Raises:
    ValueError: the independent head with different backbones (`model.backbones`), whose
      per-characteristic trees one PyTorch file cannot all fit.
  """
  places = []
  names = tuple(model_cfg.backbones or ())
  for key in model_params:
    if key == "backbone":
      places.append((key, model_cfg.backbone, False))
    elif key == "backbones":   # independent head, identical backbones stacked on axis 0
      places.append((key, names[0] if names else model_cfg.backbone, True))
    elif key.startswith("backbone_"):
      raise ValueError(f"model.init_from: model.backbones={names} mixes backbones; PyTorch "
                       "weights load only into one backbone or identical (stacked) ones")
  return places


def init_from(state: dict, model_cfg, log: Callable[[str], None] = print) -> dict:
  """The train state with its backbone(s) (or, from an Orbax run, every shared
  parameter) replaced by the weights at `model_cfg.init_from`.

  Args:
    state: the initialised train state {"params": {"model", "loss"}, "batch_stats", ...}.
    model_cfg: `config.model` (init_from, backbone, backbones).
    log: one-line progress messages.

  Returns:
    The state with NumPy leaves where weights were loaded (put it back on its shardings).

  Raises:
    ValueError: missing file, unknown format, or a name / shape mismatch (one line).
  """
  path = os.path.expanduser(model_cfg.init_from)
  if not os.path.exists(path):
    raise ValueError(f"model.init_from={path}: no such file or folder")
  model_params = state["params"]["model"]
  stats = state.get("batch_stats") or {}
  new_params, new_stats = dict(model_params), dict(stats)
  if os.path.isdir(path):
    source = read_orbax_state(path)
    required = tuple(k for k in model_params if k.startswith("backbone"))
    loaded: list[str] = []
    new_params = _copy_matching(source["params"]["model"], model_params, required, "",
                                loaded)
    if stats:
      new_stats = _copy_matching(source.get("batch_stats") or {}, stats, required, "",
                                 loaded)
    log(f"Initialised {len(loaded)} arrays from the run at {path}")
  else:
    places = backbone_places(model_params, model_cfg)
    if not places:
      raise ValueError(f"model.init_from={path}: the model has no backbone to load into")
    tensors = read_state_dict(path)
    for key, arch, stacked in places:
      p, s = model_params[key], stats.get(key, {})
      if stacked:  # StackedBackbones keeps each tree under "stacked", leading axis C
        p, s = p["stacked"], s.get("stacked", {}) if s else {}
        count = int(np.shape(next(_leaves(p)))[0])
        p, s = load_torch_backbone(tensors, arch, p, s, where=f"{key}/stacked",
                                   stacked=count)
        p, s = {"stacked": p}, ({"stacked": s} if s else {})
      else:
        p, s = load_torch_backbone(tensors, arch, p, s, where=key)
      new_params[key] = p
      if key in stats:
        new_stats[key] = s
    log(f"Initialised {len(places)} backbone(s) from {path}")
  return {**state, "params": {**state["params"], "model": new_params}, "batch_stats": new_stats}


def _leaves(tree: Any) -> Iterator[Any]:
  if isinstance(tree, dict):
    for v in tree.values():
      yield from _leaves(v)
  else:
    yield tree
