"""Moved to `dnh_jax.data.medphantom.paint`; this name stays for other branches' imports."""

import sys

from dnh_jax.data.medphantom import paint as _moved

sys.modules[__name__] = _moved
