"""Models: backbones (trunks), hash heads and `build_model(model_cfg, schema)`.

`settings` resolves the model section's shared settings (dtype, sub-code lengths,
pre-hash layer); `build` (flat, structured heads) and `independent` (one network per
characteristic) both use it."""

from dnh_jax.models.backbones import BACKBONES, get_backbone
from dnh_jax.models.build import DTYPES, HEADS, build_model, segments
from dnh_jax.models.heads import sign_straight_through

__all__ = ["BACKBONES", "DTYPES", "HEADS", "build_model", "get_backbone", "segments",
           "sign_straight_through"]
