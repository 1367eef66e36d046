"""Moved to `dnh_jax.data.medphantom.core`; this name stays for other branches' imports."""

import sys

from dnh_jax.data.medphantom import core as _moved

sys.modules[__name__] = _moved
