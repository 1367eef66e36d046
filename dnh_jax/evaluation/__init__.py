"""Retrieval evaluation: metrics (the dense NumPy reference, per query, tie-aware),
relevance rules, the shared kernel + finisher (`kernel`), the evaluator (`evaluator`, one
process; `sharded`, a gallery split over processes), query groups, k-NN sub-code accuracy
and the pre-training split checks."""

from dnh_jax.evaluation.evaluator import Evaluator, evaluate_codes
from dnh_jax.evaluation.metrics import (TIES, acg, average_precision, ndcg, pr_curve,
                                        precision_at_radius, weighted_map)
from dnh_jax.evaluation.relevance import RELEVANCE, get_relevance

__all__ = [
    "Evaluator", "RELEVANCE", "TIES", "acg", "average_precision", "evaluate_codes",
    "get_relevance", "ndcg", "pr_curve", "precision_at_radius", "weighted_map",
]
