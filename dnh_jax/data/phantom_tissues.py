"""Moved to `dnh_jax.data.medphantom.tissues`; this name stays for other branches' imports."""

import sys

from dnh_jax.data.medphantom import tissues as _moved

sys.modules[__name__] = _moved
