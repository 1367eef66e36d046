"""Config files and strict config arguments."""

import glob
import importlib.util
import os

import pytest

from dnh_jax import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_there_are_config_files():
  assert any(p.endswith("baseline.py") for p in CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_config_loads_default_and_quick(path):
  module = _load(path)
  assert module.get_config.__doc__ or module.__doc__, f"{path} needs a docstring with its command"
  for arg in (None, "quick"):
    c = module.get_config(arg)
    assert c.train.steps >= 0 and c.model.bits > 0
    assert c.train.best_metric.startswith("val/"), "checkpoint selection must not use test"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_config_rejects_typos(path):
  module = _load(path)
  with pytest.raises(config_lib.ConfigArgError, match="quikc"):
    module.get_config("quikc")


def test_parse_arg_types_and_errors():
  c = config_lib.parse_arg("bits=32,quick", bits=16, quick=False, lr=0.1, name="x")
  assert (c.bits, c.quick, c.lr, c.name) == (32, True, 0.1, "x")
  c = config_lib.parse_arg("quick=off,lr=1e-3", bits=16, quick=True, lr=0.1)
  assert c.quick is False and c.lr == pytest.approx(1e-3)
  with pytest.raises(config_lib.ConfigArgError, match=r"valid arguments: \['bits', 'quick'\]"):
    config_lib.parse_arg("bitz=3", bits=16, quick=False)
  with pytest.raises(config_lib.ConfigArgError, match="expected a boolean"):
    config_lib.parse_arg("quick=False_", quick=False)
  with pytest.raises(config_lib.ConfigArgError, match="expected an integer"):
    config_lib.parse_arg("bits=3x", bits=16)
  with pytest.raises(config_lib.ConfigArgError, match=r"expected one of \[16, 32\]"):
    config_lib.parse_arg("bits=24", bits=16, choices={"bits": (16, 32)})
  with pytest.raises(config_lib.ConfigArgError, match="needs a value"):
    config_lib.parse_arg("bits", bits=16)


def test_baseline_config_choices():
  module = _load(os.path.join(ROOT, "configs", "baseline.py"))
  c = module.get_config("loss=dch,bits=48,backbone=resnet18")
  assert (c.loss.name, c.model.bits, c.model.backbone) == ("dch", 48, "resnet18")
  with pytest.raises(config_lib.ConfigArgError, match="dpsh"):
    module.get_config("loss=dpshh")
  c = module.get_config("loss=idhn")
  assert c.data.multilabel and c.eval.relevance == "shared" and c.loss.similarity == "shared"
  assert module.get_config("").data.image_size == 64
  assert module.get_config("quick").data.image_size == 32
  c = module.get_config("backbone=alexnet,size=224,init_from=/w/alexnet.pth,quick")
  assert (c.data.image_size, c.model.init_from) == (224, "/w/alexnet.pth")
  with pytest.raises(config_lib.ConfigArgError, match="size"):
    module.get_config("size=100")
  w = module.get_config("loss=dpsh").loss.weights
  assert (w.cosine, w.balance) == (1.0, 1.0)
  w = module.get_config("loss=dpsh,plain").loss.weights
  assert (w.cosine, w.balance) == (0.0, 0.0)
  assert module.get_config("loss=dsh").loss.weights.linear == 1.0
  assert module.get_config("loss=dsh,plain").loss.weights.linear == 0.0


@pytest.mark.parametrize("loss", ["dpsh", "csq", "greedyhash", "orthohash", "idhn"])
def test_baseline_loss_config_matches_its_data(loss):
  """The loss section validates against the schema of the data the config selects."""
  from dnh_jax import losses
  from dnh_jax.data import schema as schema_lib
  module = _load(os.path.join(ROOT, "configs", "baseline.py"))
  c = module.get_config(f"loss={loss}")
  schema = (schema_lib.chest_multilabel_schema() if c.data.multilabel
            else schema_lib.multi_characteristic_schema())
  losses.get_loss(c.loss, schema)


def test_locked_config_rejects_unknown_fields():
  c = config_lib.base_config()
  c.lock()
  with pytest.raises(AttributeError):
    c.train.stepz = 3


def test_default_workdir():
  assert config_lib.default_workdir("configs/ophash.py") == os.path.join("workdirs", "ophash")
  assert config_lib.default_workdir("configs/ophash.py:bits=32,quick") == os.path.join(
      "workdirs", "ophash-bits=32,quick")


def test_baseline_loss_weights_can_be_set_from_the_command_line():
  """Every loss hyperparameter is in the config (so `--config.loss.weights.eta=0.5` works
  on the locked config and config.json records it); a misspelt one is refused."""
  from absl import flags
  from ml_collections import config_flags
  from dnh_jax import losses
  for loss in ("dpsh", "dch", "idhn"):
    module = _load(os.path.join(ROOT, "configs", "baseline.py"))
    assert dict(module.get_config(f"loss={loss},plain").loss.weights) == (
        losses.DEFAULT_WEIGHTS[loss])
    assert dict(module.get_config(f"loss={loss}").loss.weights) == {
        **losses.DEFAULT_WEIGHTS[loss], **module.WORKING_FORM.get(loss, {})}
  path = os.path.join(ROOT, "configs", "baseline.py")

  def parse(*argv):  # the override flags are found from the argv given at definition
    fv, argv = flags.FlagValues(), ["prog", f"--config={path}:loss=dpsh", *argv]
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                    sys_argv=argv)
    fv(argv)
    return fv.config

  assert parse("--config.loss.weights.eta=0.5").loss.weights.eta == 0.5
  with pytest.raises(Exception, match="etaa"):
    parse("--config.loss.weights.etaa=0.5")


# Names under which the code reads each config section (`tc = config.train`, ...).
_SECTION_NAMES = {"data": ("data_cfg",), "model": ("model_cfg",), "train": ("tc",),
                  "eval": ("ec",), "loss": ("loss_cfg", "cfg"), "mesh": (), "report": ()}
_METHODS = {"get", "to_dict", "to_json_best_effort", "lock", "unlock", "keys", "items"}


def fields_the_code_reads() -> set[tuple[str, str]]:
  """(section, field) of every `config.<section>.<field>`, `<alias>.<field>` and
  `<alias>.get("<field>"` in the package (`cfg` only in losses/, where it is config.loss)."""
  import re  # pylint: disable=g-import-not-at-top
  found = set()
  for path in glob.glob(os.path.join(ROOT, "dnh_jax", "**", "*.py"), recursive=True):
    text = open(path).read()
    for section, aliases in _SECTION_NAMES.items():
      names = [rf"config\.{section}"] + [re.escape(a) for a in aliases
                                         if a != "cfg" or f"{os.sep}losses{os.sep}" in path]
      for name in names:
        for field in re.findall(rf"\b{name}\.([a-z_]+)\b", text):
          found.add((section, field))
        for field in re.findall(rf"\b{name}\.get\(\"([a-z_]+)\"", text):
          found.add((section, field))
  return {(s, f) for s, f in found if f not in _METHODS}


def test_every_field_the_code_reads_is_in_base_config():
  fields = fields_the_code_reads()
  assert ("train", "decay_every") in fields and ("loss", "organ") in fields  # the walk works
  base = config_lib.base_config()
  missing = sorted(f"{s}.{f}" for s, f in fields if f not in base[s])
  assert not missing, f"read by the code but not defined in base_config: {missing}"


def test_every_base_field_is_set_with_a_comment():
  """Every field of base_config is set on a line of its own with a one-line comment."""
  import inspect  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  lines = inspect.getsource(config_lib.base_config).splitlines()
  for section, fields in config_lib.base_config().items():
    if not hasattr(fields, "keys"):
      continue
    for field in fields.keys():
      setting = [l for l in lines if re.match(rf"\s+({section[0]}|c\.{section})\.{field} = ", l)]
      assert setting, f"{section}.{field} is not set in base_config"
      assert all("#" in l for l in setting), f"{section}.{field} has no comment: {setting}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_field_the_code_reads_is_settable_from_the_command_line(path):
  """`--config.train.decay_every=10`, `--config.loss.organ=organ`, ...: with the config
  locked (as main.py loads it), each field the code reads can be overridden."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  module = _load(path)
  config = module.get_config(None)
  overrides = []
  for section, field in sorted(fields_the_code_reads()):
    value = config[section][field]
    if isinstance(value, (bool, int, float, str)) and not isinstance(value, bool):
      overrides.append(f"--config.{section}.{field}={value}")
  assert "--config.train.decay_every=1000" in overrides
  fv, argv = flags.FlagValues(), ["prog", f"--config={path}", *overrides]
  # The override flags are found from the argv given at definition.
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  assert fv.config.train.decay_every == 1000 and fv.config.loss.organ == config.loss.organ
