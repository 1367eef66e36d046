"""Binary codes and Hamming ranking: pack/unpack, distances, exact top-k, preferences,
persistent gallery index; and the retrieval application on top of a trained model
(`Retriever`, gallery building, search), imported lazily because it needs the models."""

import importlib

from dnh_jax.retrieval.codes import as_packed, num_words, pack_codes, sign_codes, unpack_codes
from dnh_jax.retrieval.hamming import (distance_terms, hamming_distances, hamming_topk,
                                       priority_weights)
from dnh_jax.retrieval.index import GalleryIndex, IndexFileError, fingerprint
from dnh_jax.retrieval.preferences import Preference, parse_preference

# The application layer imports models, data and checkpointing; the trainer imports this
# package for the kernels only, so those names resolve on first use (PEP 562).
_LAZY = {"Retriever": "dnh_jax.retrieval.retriever",
         "CheckpointError": "dnh_jax.retrieval.retriever",
         "SearchResults": "dnh_jax.retrieval.search"}

__all__ = [
    "CheckpointError", "GalleryIndex", "IndexFileError", "Preference", "Retriever",
    "SearchResults", "as_packed", "distance_terms", "fingerprint", "hamming_distances",
    "hamming_topk", "num_words", "pack_codes", "parse_preference", "priority_weights",
    "sign_codes", "unpack_codes",
]


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'dnh_jax.retrieval' has no attribute {name!r}")
