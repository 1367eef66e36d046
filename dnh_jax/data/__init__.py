"""Data: label schema, MedPhantom renderer, TFDS builders, splits and batches.

The trainer uses exactly this surface:

    splits = load_splits(config.data, seed=config.seed, data_dir=...)
    write_manifest(splits, "<workdir>/split_manifest.json")
    batcher = Batcher(splits.data["train"], global_batch_size, seed=..., augment=...,
                      process_index=..., process_count=...)
    batch = batcher.batch(step)   # {"image": float32[B, H, W, 1], <characteristic>: ...}

`DATASETS` maps `config.data.name` to the function creating its builder.
"""

from dnh_jax.data.batching import Batcher
from dnh_jax.data.batching import images_to_float
from dnh_jax.data.builders import DATASETS
from dnh_jax.data.builders import get_builder
from dnh_jax.data.pipeline import SPLITS
from dnh_jax.data.pipeline import SplitData
from dnh_jax.data.pipeline import Splits
from dnh_jax.data.pipeline import load_splits
from dnh_jax.data.pipeline import write_manifest
