"""Test set-up: four fake CPU devices and a per-session TFDS data folder.

XLA_FLAGS must be set before jax is first imported, so it is set here, at collection time.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("DNH_DATA_DIR", tempfile.mkdtemp(prefix="dnh_tfds_"))
