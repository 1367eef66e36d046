"""Moved to `dnh_jax.data.medphantom` (`renderer`, contact sheet `sheet`); this
name stays for other branches' imports and `python -m dnh_jax.data.phantom`."""

import sys

from dnh_jax.data.medphantom import renderer as _moved
from dnh_jax.data.medphantom import sheet as _sheet

if __name__ == "__main__":
  sys.exit(_sheet.main())
sys.modules[__name__] = _moved
