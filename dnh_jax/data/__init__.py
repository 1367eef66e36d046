"""Data: label schema and rules, the MedPhantom renderer, TFDS builders, splits, batches.

The bottom layer: it imports nothing of models, losses, evaluation or the trainer. Label
rules live here once - pair similarities and class targets (`similarity`), held-out
(modality, organ) pairs (`held_out`) - and `medphantom/` is the procedural renderer.

The trainer uses exactly this surface:

    splits = load_splits(config.data, seed=config.seed, data_dir=...)
    write_manifest(splits, "<workdir>/split_manifest.json")
    batcher = Batcher(splits.data["train"], global_batch_size, seed=..., augment=...,
                      process_index=..., process_count=...)
    batch = batcher.batch(step)   # {"image": float32[B, H, W, 1], <characteristic>: ...}

`DATASETS` maps `config.data.name` to the function creating its builder.

The names are resolved lazily (PEP 562), so `import dnh_jax.data.schema` - needed by the
evaluation code and by GPU-only retrieval jobs - does not import TFDS.
"""

import importlib

_EXPORTS = {
    "Batcher": "dnh_jax.data.batching",
    "images_to_float": "dnh_jax.data.batching",
    "DATASETS": "dnh_jax.data.builders",
    "get_builder": "dnh_jax.data.builders",
    "SPLITS": "dnh_jax.data.pipeline",
    "SplitData": "dnh_jax.data.pipeline",
    "Splits": "dnh_jax.data.pipeline",
    "default_data_dir": "dnh_jax.data.pipeline",
    "load_splits": "dnh_jax.data.pipeline",
    "write_manifest": "dnh_jax.data.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'dnh_jax.data' has no attribute {name!r}")
