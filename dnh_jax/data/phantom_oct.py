"""Moved to `dnh_jax.data.medphantom.oct`; this name stays for other branches' imports."""

import sys

from dnh_jax.data.medphantom import oct as _moved

sys.modules[__name__] = _moved
