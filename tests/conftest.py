"""Test configuration.

Tests run on the CPU with XLA's cheapest LLVM optimisation level: test programs are small, so
compile time dominates and level 0 roughly halves it. Multi-device behaviour is tested in
subprocesses that set `--xla_force_host_platform_device_count=8` themselves (tests/multidevice.py),
because 8 simulated devices on a 2-core machine slow every other test several-fold.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
