"""Compatibility name: the similarity rules live in `dnh_jax.data.similarity`.

Pair similarities and class targets are label rules, so they sit in the data layer, where
models (code classifiers) and losses both read them without importing each other.
"""

from dnh_jax.data.similarity import (ALL, SHARED, Labels, class_ids, class_targets,  # noqa: F401
                                     is_multilabel, num_classes, pair_similarity,
                                     rule_characteristics, soft_similarity, valid_rules)
