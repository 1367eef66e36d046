"""TFDS builders (ArrayRecord, Tensor features, no TensorFlow) and the dataset registry.

`DATASETS` maps each `config.data.name` to a function `(data_cfg, data_dir) -> builder`
(not yet prepared); `dnh_jax.data.pipeline.load_splits` prepares, reads and splits it.
"""

from __future__ import annotations

from typing import Callable

from dnh_jax.data.builders import base
from dnh_jax.data.builders import chestxray14
from dnh_jax.data.builders import dicom_dir
from dnh_jax.data.builders import image_folder
from dnh_jax.data.builders import medmnist
from dnh_jax.data.builders import medphantom

DATASETS: dict[str, Callable[..., base.DnhBuilder]] = {
    "medphantom": medphantom.from_config,          # data.multilabel: the chest collection
    "medphantom_chest": medphantom.chest_from_config,
    "medmnist": medmnist.from_config,
    "image_folder": image_folder.from_config,
    "chestxray14": chestxray14.from_config,
    "dicom": dicom_dir.from_config,
}


def get_builder(data_cfg, data_dir: str) -> base.DnhBuilder:
  """The (unprepared) builder named by `data_cfg.name`; raises listing the valid names."""
  if data_cfg.name not in DATASETS:
    raise ValueError(f"data.name={data_cfg.name!r} is not a dataset; choose one of "
                     f"{sorted(DATASETS)}")
  return DATASETS[data_cfg.name](data_cfg, data_dir)
