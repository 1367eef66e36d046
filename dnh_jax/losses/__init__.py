"""Hashing losses: shared building blocks, pair similarities and baseline losses.

Modules: `common` (distances, Cauchy similarity, log-cosh regression, quantization),
`pairwise` (DPSH, DSH, HashNet, DCH, IDHN), `pointwise` (CSQ, GreedyHash, OrthoHash),
`structured` (per-sub-code losses), `ophash`, `multilabel`, `invariance`, `registry`
(LOSSES, get_loss). Similarities and class targets from labels are data rules
(`dnh_jax.data.similarity`; `pairs` is its old name).
"""

from dnh_jax.losses.registry import DEFAULT_WEIGHTS, LOSSES, classification_loss, get_loss

__all__ = ["DEFAULT_WEIGHTS", "LOSSES", "classification_loss", "get_loss"]
