"""Moved to `dnh_jax.data.medphantom.slices`; this name stays for other branches' imports."""

import sys

from dnh_jax.data.medphantom import slices as _moved

sys.modules[__name__] = _moved
