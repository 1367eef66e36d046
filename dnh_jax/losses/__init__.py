"""Hashing losses: shared building blocks, pair similarities and baseline losses.

Modules: `common` (distances, Cauchy similarity, log-cosh regression, quantization),
`pairs` (similarities and class targets from labels), `pairwise` (DPSH, DSH, HashNet,
DCH, IDHN), `pointwise` (CSQ, GreedyHash, OrthoHash), `registry` (LOSSES, get_loss).
"""

from dnh_jax.losses.registry import DEFAULT_WEIGHTS, LOSSES, classification_loss, get_loss

__all__ = ["DEFAULT_WEIGHTS", "LOSSES", "classification_loss", "get_loss"]
