"""Binary codes and Hamming ranking: pack/unpack, distances, exact top-k, preferences,
persistent gallery index."""

from dnh_jax.retrieval.codes import as_packed, num_words, pack_codes, sign_codes, unpack_codes
from dnh_jax.retrieval.hamming import (distance_terms, hamming_distances, hamming_topk,
                                       priority_weights)
from dnh_jax.retrieval.index import GalleryIndex, IndexFileError, fingerprint
from dnh_jax.retrieval.preferences import Preference, parse_preference

__all__ = [
    "GalleryIndex", "IndexFileError", "Preference", "as_packed", "distance_terms",
    "fingerprint", "hamming_distances", "hamming_topk", "num_words", "pack_codes",
    "parse_preference", "priority_weights", "sign_codes", "unpack_codes",
]
