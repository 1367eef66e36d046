"""Test set-up: four fake CPU devices, a per-session TFDS data folder, a compilation cache.

XLA_FLAGS must be set before jax is first imported, so it is set here, at collection time.
Many tests compile the same small programs (every trainer run compiles its init, step and
encoder); a persistent compilation cache shared by the session compiles each once.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("DNH_DATA_DIR", tempfile.mkdtemp(prefix="dnh_tfds_"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dnh_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
