"""Test-session setup of every test folder (tests/, research/tests/): 8 fake CPU devices (for
data-parallel tests) and quiet TensorFlow.

XLA reads its flags when jax first initialises a backend, so this runs before any test imports
jax. Subprocess tests set their own device count and keep the other flags
(`test_train_runner.xla_flags`).

The tests spend most of their time compiling small programs, not running them: LLVM's
optimisation level 0 halves XLA:CPU's compile time of the tiny model's train step (39 -> 18 s
on 2 cores) and doubles its run time (113 -> 227 ms), with the same loss to the last bit. XLA's
own (HLO) optimisations, which decide what is computed, still run.
"""

import os
import signal
import sys

os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

REPO = os.path.dirname(os.path.abspath(__file__))
# `configs` and `research` are top-level folders of the repo (not part of the installed package);
# tests/ holds the helpers of the subprocess tests (`test_train_runner`), which research/tests
# uses too.
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]


def pytest_sessionfinish(session):
    """An xdist worker whose tests are done ignores SIGINT. execnet ends a worker still busy 5 s
    after the shutdown (tearing down JAX, TensorStore and grain on a loaded machine) by sending it
    SIGINT; landing in JAX's gc callback (`_xla_gc_callback`), the KeyboardInterrupt is
    "ignored" and pytest reports it as an unraisable exception after every test passed. The
    worker then finishes its teardown (or execnet ends it 10 s later); the controller, which a
    user's Ctrl-C reaches, keeps its handler."""
    if hasattr(session.config, "workerinput"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
