"""Not tests: helpers of the subprocess tests, and the launcher they run instead of main.py.

The launcher takes main.py's flags plus its own (--fault, --fault_at, --data, ...) and wraps
the train loader so that faults happen at a known step (deterministic signal, NaN and kill
tests) or so that every host count sees the same global batches (device/host-count tests):

  python tests/test_train_runner.py --config=configs/cpu_debug.py --workdir=DIR \
      --config.debug_dummy_data=True --fault=sigint --fault_at=7
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cli_helpers import xla_flags  # noqa: E402

from wavlejepa.data import pipeline  # noqa: E402

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_KEYS = ("steps_per_sec", "examples_per_sec")  # Wall-clock fields: differ run to run.
DEBUG = ["--config=configs/cpu_debug.py", "--config.debug_dummy_data=True"]


def subprocess_env(cache_dir, devices: int = 1) -> dict:
    """Environment of a training subprocess: fake CPU devices and a shared compilation cache, so
    the runs of one test session compile each program once."""
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=xla_flags(devices),
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=REPO,
    )
    return env


def launch(args, env, log_path, *, main_module=False) -> subprocess.Popen:
    """Starts main.py (main_module=True) or this launcher with `args`; output to log_path."""
    command = [sys.executable] + (["-m", "wavlejepa.main"] if main_module else [__file__])
    with open(log_path, "w") as log:  # The child keeps its own handle.
        return subprocess.Popen(
            command + list(args),
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Its own process group: signals sent to it stay there.
        )


def run(args, env, log_path, *, main_module=False, expect_rc=0, timeout=300) -> str:
    """Runs to the end; fails with the log's tail unless the exit code is `expect_rc`."""
    proc = launch(args, env, log_path, main_module=main_module)
    rc = proc.wait(timeout=timeout)
    log = open(log_path).read()
    if expect_rc is not None and rc != expect_rc:
        raise AssertionError(f"exit code {rc}, expected {expect_rc}; log tail:\n{log[-4000:]}")
    return log


def records(workdir, split=None) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [
        {k: v for k, v in r.items() if k not in TIME_KEYS}
        for r in rows
        if split is None or r["split"] == split
    ]


def committed_steps(directory) -> list[int]:
    if not os.path.isdir(directory):
        return []
    return sorted(
        int(name)
        for name in os.listdir(directory)
        if name.isdigit() and os.path.exists(os.path.join(directory, name, "commit_success.txt"))
    )


def _define_flags():
    """Only when launched: collecting this file under pytest must define no flags."""
    flags.DEFINE_enum(
        "fault",
        "none",
        ["none", "nan", "sigint", "sigterm", "sigkill", "ctrl_c", "sigterm_workers_died"],
        "What happens when the train loader hands out batch --fault_at of this process.",
    )
    flags.DEFINE_integer("fault_at", 0, "1-based batch count of this process.")
    flags.DEFINE_integer(
        "kill_after_checkpoint", 0, "sigkill waits until this checkpoint step is committed."
    )
    flags.DEFINE_enum(
        "data",
        "pipeline",
        ["pipeline", "global_stream"],
        "pipeline: the real (dummy) loader; global_stream: host h of H gets rows "
        "h*B/H..(h+1)*B/H of one global stream, so any host count sees the same global batches.",
    )


class GlobalStream:
    """Batch i of this host: its rows of global batch i; every row is fixed by its global index."""

    def __init__(self, crop_samples, *, batch_size, shard_index, shard_count, seed, limit=None):
        self._shape = (batch_size, crop_samples)
        self._first_row = shard_index * batch_size
        self._global_batch = batch_size * shard_count
        self._seed, self._limit, self._next = seed, limit, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._limit is not None and self._next >= self._limit:
            raise StopIteration
        rows = self._next * self._global_batch + self._first_row + np.arange(self._shape[0])
        self._next += 1
        audio = np.stack(
            [np.random.default_rng([self._seed, r]).standard_normal(self._shape[1]) for r in rows]
        )
        return {"audio": pipeline.normalize(audio)}

    def get_state(self) -> bytes:
        return json.dumps({"next": self._next}).encode()

    def set_state(self, state: bytes):
        self._next = json.loads(state.decode())["next"]

    def start_prefetch(self):
        pass


class _Loader:
    """Something `iter()` turns into a fresh iterator, like a grain.DataLoader."""

    def __init__(self, make):
        self._make = make

    def __iter__(self):
        return self._make()


class Faulty:
    """Wraps a train iterator; the --fault happens as batch --fault_at is handed out."""

    def __init__(self, inner, workdir):
        self._inner, self._workdir, self._count = inner, workdir, 0

    def __iter__(self):
        return self

    def __next__(self):
        self._count += 1
        fault = FLAGS.fault if self._count == FLAGS.fault_at else "none"
        # Faults before the batch is drawn: the inner position stays at the steps taken.
        if fault == "sigterm_workers_died":  # Deterministically what ctrl_c may cause.
            os.kill(os.getpid(), signal.SIGTERM)
            raise RuntimeError("Worker process was terminated unexpectedly (simulated).")
        if fault == "ctrl_c":  # What a terminal does: SIGINT to the process group (data workers).
            if os.getpgid(0) != os.getpid():
                raise RuntimeError("ctrl_c needs its own process group (start_new_session=True).")
            os.killpg(0, signal.SIGINT)
        if fault == "sigkill":
            marker = os.path.join(
                self._workdir, "checkpoints", str(FLAGS.kill_after_checkpoint), "commit_success.txt"
            )
            while not os.path.exists(marker):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
        batch = next(self._inner)  # After ctrl_c this usually fails: the workers are gone.
        if fault in ("sigint", "sigterm"):
            os.kill(os.getpid(), signal.SIGINT if fault == "sigint" else signal.SIGTERM)
        if fault == "nan":
            return {"audio": np.full_like(batch["audio"], np.nan)}
        return batch

    def get_state(self):
        return self._inner.get_state()

    def set_state(self, state):
        self._inner.set_state(state)

    def start_prefetch(self):
        self._inner.start_prefetch()


def _record_call(kind, **kwargs):
    import jax

    path = os.path.join(FLAGS.workdir, f"loader_{kind}_process_{jax.process_index()}.json")
    os.makedirs(FLAGS.workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(kwargs, f)


def _patch_loaders():
    real_train, real_eval = pipeline.create_train_loader, pipeline.create_eval_loader

    def train_loader(dataset_config, *, batch_size, seed, shard_index, shard_count, dummy=False):
        _record_call(
            "train", batch_size=batch_size, shard_index=shard_index, shard_count=shard_count
        )
        if FLAGS.data == "global_stream":
            make = lambda: GlobalStream(
                pipeline.crop_samples(dataset_config),
                batch_size=batch_size,
                shard_index=shard_index,
                shard_count=shard_count,
                seed=seed,
            )
        else:
            loader = real_train(
                dataset_config,
                batch_size=batch_size,
                seed=seed,
                shard_index=shard_index,
                shard_count=shard_count,
                dummy=dummy,
            )
            make = lambda: iter(loader)
        return _Loader(lambda: Faulty(make(), FLAGS.workdir))

    def eval_loader(dataset_config, *, batch_size, shard_index, shard_count, dummy=False):
        if FLAGS.data == "pipeline":
            return real_eval(
                dataset_config,
                batch_size=batch_size,
                shard_index=shard_index,
                shard_count=shard_count,
                dummy=dummy,
            )
        return _Loader(
            lambda: GlobalStream(
                pipeline.crop_samples(dataset_config),
                batch_size=batch_size,
                shard_index=shard_index,
                shard_count=shard_count,
                seed=12345,
                limit=dataset_config.eval_batches,
            )
        )

    pipeline.create_train_loader, pipeline.create_eval_loader = train_loader, eval_loader


def _launch():
    _define_flags()
    from wavlejepa import main  # Defines main.py's flags.

    def run(argv):
        _patch_loaders()
        main.main(argv)

    app.run(run)


if __name__ == "__main__":
    _launch()
