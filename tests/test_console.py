"""What a user reads on the console: the quickstart, captured to a file on a fresh dataset cache and
with only the declared dependencies importable (`declared_imports`), shows each thing once and
ends with its summary; the library noise runtime.set_up hides stays hidden, and the advice after
a spike fits the run it is given for."""

import collections
import importlib.util
import logging
import os
import re
import subprocess
import sys
import time

import declared_imports
import pytest
from absl import logging as absl_logging

import wavlejepa.data
from configs import cpu_debug, default
from wavlejepa import reporting, runtime, summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# absl's prefix: severity and date, time, thread, file:line.
_ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} \S+ +\d+ \S+:\d+\] ")
_NOISE = (
    "oneDNN",
    "InitializeLog",
    "fontManager",
    "FeatureConnector",
    "has no dataset_info.json",
    "Load dataset info",
)
_SHORT_RUN = (
    "--config.total_steps=4",
    "--config.log_every_steps=2",
    "--config.eval_every_steps=4",
    "--config.checkpoint_every_steps=4",
)


def _user_env(cache_home):
    """The environment of a user who never set TF_CPP_MIN_LOG_LEVEL, with a fresh dataset
    cache; compiled programs come from the JAX cache a real user's second run would have."""
    user_cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    jax_cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        user_cache, "wavlejepa", "jax"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(
        XDG_CACHE_HOME=str(cache_home),
        JAX_COMPILATION_CACHE_DIR=jax_cache,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="",
    )
    return env


def _run_captured(args, env, timeout=600):
    """stdout and stderr into one pipe, in the order written (as `> file 2>&1` would keep it)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def _message(line: str) -> str:
    return _ABSL_PREFIX.sub("", line)


def test_the_quickstart_console_shows_each_thing_once_and_ends_with_the_summary(tmp_path):
    workdir = tmp_path / "run"
    start = time.monotonic()
    result = _run_captured(
        [
            os.path.join(REPO, "tests", "declared_imports.py"),
            "wavlejepa.main",
            "--config=configs/quickstart.py",
            f"--workdir={workdir}",
            *_SHORT_RUN,
        ],
        _user_env(tmp_path / "cache"),
    )
    wall = time.monotonic() - start
    out = result.stdout
    assert result.returncode == 0, out[-5000:]
    assert "\x1b" not in out and "\r" not in out, out[:3000]
    for noise in _NOISE:
        assert noise not in out, (noise, out[:3000])
    messages = [_message(line) for line in out.splitlines() if line.strip()]
    repeated = [m for m, n in collections.Counter(messages).items() if n > 1]
    assert not repeated, (repeated, out[:3000])
    for said in ("Building audio_folder", "Model small", "Training steps 1..4", "] [2] "):
        assert said in out, (said, out[:3000])
    closing = summary.lines(str(workdir), wavlejepa.data.FSDD_SAMPLE_DIR)
    assert closing[0].startswith("Run in") and "Held-out loss at step 0" in closing[1]
    assert out.rstrip("\n").endswith("\n".join(closing)), out[-3000:]
    print(f"quickstart console test: {wall:.0f} s")


def test_tensorflow_import_prints_nothing_unless_its_info_is_asked_for():
    code = "from wavlejepa import runtime; runtime.set_up(); import tensorflow"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = _run_captured(["-c", code], env, timeout=300)
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout
    loud = _run_captured(["-c", code], {**env, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=300)
    assert loud.returncode == 0 and "InitializeLog" in loud.stdout, loud.stdout
    assert re.search(r"^I\d{4} ", loud.stdout, re.MULTILINE), loud.stdout  # TensorFlow's INFO.


def test_stderr_without_drops_only_the_matching_lines(capfd):
    with runtime.stderr_without(lambda line: line.startswith(b"drop")):
        os.write(2, b"drop this\nkeep this\n")
        os.write(2, b"dropped too\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "keep this\nafter\n"


def test_cpp_info_lines_are_told_from_warnings():
    info = b"I0000 00:00:1796419341.616296   32375 port.cc:153] oneDNN custom operations are on.\n"
    warning = info.replace(b"I0000", b"W0000", 1)
    banner = b"WARNING: All log messages before absl::InitializeLog() is called are written to\n"
    assert runtime._is_cpp_info(info) and runtime._is_cpp_info(banner)
    assert not runtime._is_cpp_info(warning) and not runtime._is_cpp_info(b"Training steps\n")


def _record(package: str, level: int, msg: str, *args) -> logging.LogRecord:
    path = os.path.join("site-packages", package, "core", "x.py")
    return logging.LogRecord("absl", level, path, 1, msg, args, None)


def test_tfds_info_and_its_noise_warnings_are_hidden_and_its_other_warnings_kept():
    tfds_filter = runtime._TfdsNoiseFilter()
    assert not tfds_filter.filter(_record("tensorflow_datasets", logging.INFO, "Load %s", "x"))
    dtype = "`FeatureConnector.dtype` is deprecated. Please change your code"
    assert not tfds_filter.filter(_record("tensorflow_datasets", logging.WARNING, dtype))
    empty = ("Variant folder %s has no %s", "/d/1.0.0", "dataset_info.json")
    assert not tfds_filter.filter(_record("tensorflow_datasets", logging.WARNING, *empty))
    assert tfds_filter.filter(_record("tensorflow_datasets", logging.WARNING, "Disk full"))
    assert tfds_filter.filter(_record("wavlejepa", logging.INFO, "Building %s", "x"))
    before = absl_logging.get_verbosity()
    try:
        absl_logging.set_verbosity(absl_logging.DEBUG)  # --verbosity=1 shows them all.
        assert tfds_filter.filter(_record("tensorflow_datasets", logging.INFO, "Load %s", "x"))
        assert tfds_filter.filter(_record("tensorflow_datasets", logging.WARNING, dtype))
    finally:
        absl_logging.set_verbosity(before)


class _Stream:
    def __init__(self, tty: bool):
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_bars_are_off_only_off_a_terminal():
    from tensorflow_datasets.core.utils import tqdm_utils

    before = tqdm_utils._active
    try:
        tqdm_utils.display_progress_bar(True)
        assert not runtime.hide_progress_bars_off_terminal(_Stream(tty=True))
        assert tqdm_utils._active
        assert runtime.hide_progress_bars_off_terminal(_Stream(tty=False))
        assert not tqdm_utils._active
    finally:
        tqdm_utils.display_progress_bar(before)


def _advised(advice: str, name: str) -> float | None:
    match = re.search(rf"--config\.optimizer\.{name}=(\S+)", advice)
    return float(match.group(1)) if match else None


@pytest.mark.parametrize("config_module", [cpu_debug, default])
def test_spike_advice_fits_the_run(config_module):
    config = config_module.get_config()
    (warning,) = reporting.health_warnings(
        config.optimizer.warmup_steps + 1, {"loss": 1.0, "sigreg": 1e9}, None, config
    )
    advice = reporting.calmer_settings(config)
    assert advice in warning
    assert _advised(advice, "peak_lr") == pytest.approx(config.optimizer.peak_lr / 2, rel=1e-3)
    warmup = _advised(advice, "warmup_steps")
    # Only a longer warm-up than the run's own, and never one longer than the run.
    assert warmup is None or config.optimizer.warmup_steps < warmup <= config.total_steps


def test_a_run_without_warm_up_is_advised_a_tenth_of_its_length_at_most_the_recipe():
    config = cpu_debug.get_config()
    config.optimizer.warmup_steps = 0
    config.total_steps = 200
    assert _advised(reporting.calmer_settings(config), "warmup_steps") == 20
    config.total_steps = 375_000
    advice = reporting.calmer_settings(config)
    assert _advised(advice, "warmup_steps") == reporting.MAX_ADVISED_WARMUP
    with pytest.raises(FloatingPointError) as error:
        reporting.check_finite(3, {"loss": float("nan")}, config)
    assert advice in str(error.value)


def test_only_declared_distributions_are_importable_in_the_quickstart_run():
    allowed = declared_imports.declared()
    # Direct, transitive (tfds -> etils) and through an extra asked for (etils[epath] -> fsspec).
    assert {"wavlejepa", "tensorflow-datasets", "etils", "fsspec", "importlib-resources"} <= allowed
    assert not {"pytest", "nbclient", "torch"} & allowed  # Extras of ours are not followed.
    blocker = declared_imports.UndeclaredImportBlocker(allowed)
    with pytest.raises(ModuleNotFoundError, match="nbclient, which wavlejepa's dependencies"):
        blocker.find_spec("nbclient")
    assert blocker.refused == ["nbclient"]
    for passes in ("fsspec", "importlib_resources", "json", "nbclient.client", "not_installed"):
        assert blocker.find_spec(passes) is None  # Declared, stdlib, a submodule, or absent.
    # A library's probe for an optional package is answered. (ruff: a test extra with a Python
    # package no test imports; find_spec answers an imported module from sys.modules.)
    assert "ruff" not in sys.modules
    sys.meta_path.insert(0, blocker)
    try:
        assert importlib.util.find_spec("ruff") is not None
    finally:
        sys.meta_path.remove(blocker)
    assert blocker.probed == {"ruff"} and blocker.refused == ["nbclient"]
