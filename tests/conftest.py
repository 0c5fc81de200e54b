"""Test-session setup: 8 fake CPU devices (for data-parallel tests) and quiet TensorFlow.

XLA reads its flags when jax first initialises a backend, so this runs before any test imports
jax. Subprocess tests set their own XLA_FLAGS explicitly.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# `configs` is a top-level folder of the repo (not part of the installed package).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
