"""Moved to `dnh_jax.data.medphantom.chest`; this name stays for other branches' imports."""

import sys

from dnh_jax.data.medphantom import chest as _moved

sys.modules[__name__] = _moved
