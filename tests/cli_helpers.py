"""What the command-line tests share: run a tool as a user would, hash a folder, and check that a
mistake was refused in one line (exit code, no traceback, the phrases that name problem and fix)."""

import hashlib
import os
import pathlib
import subprocess
import sys

from wavlejepa import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def xla_flags(devices: int) -> str:
    """This session's XLA_FLAGS (the root conftest.py: its compile-time setting) with `devices`
    fake CPU devices instead."""
    count = "--xla_force_host_platform_device_count"
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(count)]
    return " ".join([f"{count}={devices}", *kept])


def run_module(module, *args, timeout=180, cwd=REPO, env=None):
    """`python -m module args...` in `cwd`, on one CPU device, with TensorFlow's C++ logs off."""
    quiet = {"XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **quiet, **(env or {})},
    )


def file_hashes(folder):
    """{path relative to folder: sha256} of every file under it."""
    files = [p for p in pathlib.Path(folder).rglob("*") if p.is_file()]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_refused(result, *phrases, code=cli.USAGE_ERROR):
    """Exit `code`, no traceback, and each phrase in the message."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for phrase in phrases:
        assert phrase in output, (phrase, output[-3000:])
