"""Models: backbones (trunks), hash heads and `build_model(model_cfg, schema)`."""

from dnh_jax.models.backbones import BACKBONES, get_backbone
from dnh_jax.models.build import DTYPES, HEADS, build_model, segments
from dnh_jax.models.heads import sign_straight_through

__all__ = ["BACKBONES", "DTYPES", "HEADS", "build_model", "get_backbone", "segments",
           "sign_straight_through"]
