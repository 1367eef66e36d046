"""Retrieval metrics (per query, tie-aware), relevance rules and the code-level evaluator."""

from dnh_jax.evaluation.evaluator import Evaluator, evaluate_codes
from dnh_jax.evaluation.metrics import (TIES, acg, average_precision, ndcg, pr_curve,
                                        precision_at_radius, weighted_map)
from dnh_jax.evaluation.relevance import RELEVANCE, get_relevance

__all__ = [
    "Evaluator", "RELEVANCE", "TIES", "acg", "average_precision", "evaluate_codes",
    "get_relevance", "ndcg", "pr_curve", "precision_at_radius", "weighted_map",
]
