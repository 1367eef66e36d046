"""Moved to `dnh_jax.data.medphantom.modalities`; this name stays for other branches' imports."""

import sys

from dnh_jax.data.medphantom import modalities as _moved

sys.modules[__name__] = _moved
