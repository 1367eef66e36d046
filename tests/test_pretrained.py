"""Pretrained backbones from local files (`dnh_jax.models.pretrained`).

torchvision / timm networks are built with random weights (nothing is downloaded), their
batch-norm statistics randomised too, saved as .pth or .safetensors, loaded into our
backbones, and both forward passes compared on the same grey image (repeated over the
three colour channels for PyTorch, whose RGB stem we sum over colour). Tolerance: the
largest difference <= 1e-4 x max(1, largest |feature|) in float32.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch_compat  # noqa: E402  (tests/torch_compat.py)

from dnh_jax import checkpointing
from dnh_jax import config_lib
from dnh_jax import models
from dnh_jax.data import schema as schema_lib
from dnh_jax.models import pretrained

SCHEMA = schema_lib.multi_characteristic_schema()
KEY = jax.random.key(0)


def _torchvision():
  return torch_compat.import_torchvision()


def _torch_model(source: str, arch: str, seed: int = 0):
  """A random-weight PyTorch network without its ImageNet classifier, in eval mode."""
  torch.manual_seed(seed)
  if source == "timm":
    _torchvision()
    timm = pytest.importorskip("timm")
    net = timm.create_model(arch, pretrained=False)
  else:
    net = getattr(_torchvision().models, arch)(weights=None)
  # Non-trivial batch norms: random affine parameters and running statistics.
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
  return net.eval()


def _save(net, source: str, directory) -> str:
  state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
  if source == "timm":   # timm / Hugging Face ship .safetensors
    from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
    path = os.path.join(directory, "weights.safetensors")
    save_file(state, path)
  else:                  # torchvision ships torch.save'd .pth
    path = os.path.join(directory, "weights.pth")
    torch.save(state, path)
  return path


def _cfg(backbone, head="flat", init_from=""):
  cfg = config_lib.base_config().model
  cfg.backbone, cfg.head, cfg.bits, cfg.classifier, cfg.init_from = (
      backbone, head, 16, False, init_from)
  return cfg


def _state(model, size):
  """A train-state-like dict of zeros shaped like model.init's variables (no compile)."""
  images = jax.ShapeDtypeStruct((2, size, size, 1), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init({"params": KEY, "dropout": KEY}, x), images)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  return {"params": {"model": zeros["params"], "loss": {}},
          "batch_stats": zeros.get("batch_stats", {})}


def _features(model, state, images):
  variables = {"params": state["params"]["model"]}
  if state["batch_stats"]:
    variables["batch_stats"] = state["batch_stats"]
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False)["features"])(
      variables, images))


# ResNets at 128 px, the smallest size with the ImageNet stem (7x7/2 + pool); AlexNet at
# 224 px, the size at which its fc6 reads a 6x6 map as in torchvision (AdaptiveAvgPool 6x6).
CASES = [("torchvision", "resnet18", 128), ("timm", "resnet18", 128),
         ("torchvision", "resnet50", 128), ("timm", "resnet50", 128),
         ("torchvision", "alexnet", 224)]


@pytest.mark.parametrize("source,arch,size", CASES, ids=[f"{s}-{a}" for s, a, _ in CASES])
def test_forward_equals_pytorch(tmp_path, source, arch, size):
  net = _torch_model(source, arch)
  path = _save(net, source, tmp_path)
  cfg = _cfg(arch, init_from=path)
  model = models.build_model(cfg, SCHEMA)
  state = pretrained.init_from(_state(model, size), cfg, log=lambda _: None)
  grey = np.random.default_rng(0).random((2, 1, size, size), np.float32)
  if arch == "alexnet":
    net.classifier[6] = torch.nn.Identity()   # features = relu(fc7), as ours
  else:
    net.fc = torch.nn.Identity()              # features = global average pool
  with torch.no_grad():
    want = net(torch.from_numpy(grey).repeat(1, 3, 1, 1)).numpy()
  got = _features(model, state, grey.transpose(0, 2, 3, 1))
  assert got.shape == want.shape
  tol = 1e-4 * max(1.0, float(np.abs(want).max()))
  assert float(np.abs(got - want).max()) <= tol, (np.abs(got - want).max(), tol)


def test_wrong_architecture_names_the_parameter(tmp_path):
  path = _save(_torch_model("torchvision", "resnet50"), "torchvision", tmp_path)
  cfg = _cfg("resnet18", init_from=path)
  state = _state(models.build_model(cfg, SCHEMA), 128)
  with pytest.raises(ValueError, match=r"backbone/stage0_block0/Conv_0/kernel needs shape"):
    pretrained.init_from(state, cfg)


def test_small_stem_and_alexnet_size_mismatch_are_named(tmp_path):
  path = _save(_torch_model("torchvision", "resnet18"), "torchvision", tmp_path)
  cfg = _cfg("resnet18", init_from=path)   # 64 px: the 3x3 stem, not torchvision's 7x7
  with pytest.raises(ValueError, match=r"backbone/stem/kernel needs shape \(3, 3, 1, 64\)"):
    pretrained.init_from(_state(models.build_model(cfg, SCHEMA), 64), cfg)
  path = _save(_torch_model("torchvision", "alexnet"), "torchvision", tmp_path)
  cfg = _cfg("alexnet", init_from=path)    # 160 px: the 11x11 stem, but a 4x4 last map
  with pytest.raises(ValueError, match=r"backbone/fc6/kernel .* 6x6x256"):
    pretrained.init_from(_state(models.build_model(cfg, SCHEMA), 160), cfg)


def test_leftover_tensors_are_an_error(tmp_path):
  net = _torch_model("torchvision", "resnet18")
  net.extra = torch.nn.Linear(2, 2)
  path = _save(net, "torchvision", tmp_path)
  cfg = _cfg("resnet18", init_from=path)
  with pytest.raises(ValueError, match=r"no place in the resnet18 backbone.*extra"):
    pretrained.init_from(_state(models.build_model(cfg, SCHEMA), 128), cfg)


def test_independent_stack_gets_the_same_weights_in_every_copy(tmp_path):
  path = _save(_torch_model("timm", "resnet18"), "timm", tmp_path)
  flat_cfg, cfg = _cfg("resnet18", init_from=path), _cfg("resnet18", "independent", path)
  flat = pretrained.init_from(_state(models.build_model(flat_cfg, SCHEMA), 128), flat_cfg)
  stacked = pretrained.init_from(_state(models.build_model(cfg, SCHEMA), 128), cfg)
  one = flat["params"]["model"]["backbone"]
  stack = stacked["params"]["model"]["backbones"]["stacked"]
  for copy in range(len(SCHEMA.names)):
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[copy]), one, stack)
  stats = stacked["batch_stats"]["backbones"]["stacked"]
  np.testing.assert_array_equal(stats["stem_norm"]["var"][2],
                                flat["batch_stats"]["backbone"]["stem_norm"]["var"])


def test_orbax_run_fine_tunes_from_its_weights(tmp_path):
  cfg = _cfg("small_cnn")
  source = _state(models.build_model(cfg, SCHEMA), 32)
  source = jax.tree.map(lambda a: a + 0.5, source)
  source["step"] = np.zeros([], np.int32)
  ckpt = checkpointing.Checkpoints(str(tmp_path / "run" / "checkpoints"), keep=1,
                                   best_metric="val/mAP@100")
  ckpt.save_last(7, source)
  ckpt.wait()
  cfg.init_from, cfg.bits = str(tmp_path / "run"), 32   # another code length: head stays
  target = _state(models.build_model(cfg, SCHEMA), 32)
  got = pretrained.init_from(target, cfg, log=lambda _: None)
  backbone = got["params"]["model"]["backbone"]
  np.testing.assert_array_equal(backbone["conv0"]["kernel"],
                                source["params"]["model"]["backbone"]["conv0"]["kernel"])
  assert float(np.abs(got["params"]["model"]["head"]["hash"]["dense"]["kernel"]).max()) == 0
  cfg.backbone = "alexnet"   # a backbone the run does not have
  with pytest.raises(ValueError,
                     match=r"parameter backbone/conv1/\w+ \(shape .* in the checkpoint"):
    pretrained.init_from(_state(models.build_model(cfg, SCHEMA), 32), cfg)


def test_unknown_file_type_and_missing_path():
  cfg = _cfg("resnet18", init_from="/nonexistent/weights.pth")
  with pytest.raises(ValueError, match="no such file"):
    pretrained.init_from({"params": {"model": {"backbone": {}}}, "batch_stats": {}}, cfg)
  with pytest.raises(ValueError, match=r"expected a \.safetensors, \.pth"):
    pretrained.read_state_dict(__file__)
