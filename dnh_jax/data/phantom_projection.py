"""Moved to `dnh_jax.data.medphantom.projection`; this name stays for other branches' imports."""

import sys

from dnh_jax.data.medphantom import projection as _moved

sys.modules[__name__] = _moved
