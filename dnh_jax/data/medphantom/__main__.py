"""python -m dnh_jax.data.medphantom --sheet sheet.png: the contact sheet (`sheet.py`)."""

import sys

from dnh_jax.data.medphantom.sheet import main

if __name__ == "__main__":
  sys.exit(main())
