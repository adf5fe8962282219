"""Test configuration.

Tests run on the CPU with XLA's cheapest LLVM optimisation level: test programs are small, so
compile time dominates and level 0 roughly halves it. Multi-device behaviour is tested in
subprocesses that set `--xla_force_host_platform_device_count=8` themselves (tests/multidevice.py),
because 8 simulated devices on a 2-core machine slow every other test several-fold.

Compiling and tracing are single-threaded, so the suite runs in 2 pytest-xdist workers, one test
file per worker (`-n 2 --dist loadfile` in pyproject.toml: module fixtures are built once). Each
worker keeps a persistent XLA compilation cache in a temporary directory, inherited by the
`train.py` subprocesses it starts: a program compiled again in the same file (the three runs of
the resume test, repeated `train.run` calls) is loaded instead of recompiled. The cache only skips
compilation; results are those of the same executable.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="msa_jax_test_xla_cache_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "1"
