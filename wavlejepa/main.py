r"""Command line of WavLeJEPA training: parses flags, then calls `train.train_and_evaluate`.

  python -m wavlejepa.main --config=configs/cpu_debug.py --workdir=/tmp/wj_debug \
      --config.debug_dummy_data=True

On several hosts (a TPU pod slice, a SLURM job) add `--multihost` on every host; elsewhere give
the coordinator explicitly (`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`).

Exit codes: 0 trained (or the run was already complete); 2 (cli.USAGE_ERROR) a mistake in the
flags, config, workdir or dataset, reported in one line with nothing written to the workdir;
3 (cli.NON_FINITE) the loss or a gradient went non-finite, the last good checkpoint is kept.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from wavlejepa import cli, flag_kinds, runtime

# JAX and the trainer are imported in main(), after the flags: `--help` and flag errors are instant.

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/cpu_debug.py, or a run's <workdir>/config.json.",
    lock_config=True,
)
_WORKDIR = flag_kinds.define_output(
    "workdir", None, "Checkpoints, metrics and TensorBoard events.", kind="folder"
)
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Call jax.distributed.initialize() (cluster auto-detection)."
)
_COORDINATOR = flag_kinds.define_text(
    "coordinator_address", None, "HOST:PORT of process 0; implies --multihost.",
    pattern=r"[\w.\-]+:\d{1,5}|\[[0-9a-fA-F:.]+\]:\d{1,5}", what="HOST:PORT",
    example="10.0.0.2:1234",
)  # fmt: skip
_NUM_PROCESSES = flag_kinds.define_number(
    "num_processes", None, "With --coordinator_address.", low=1, high=65536, unit="hosts"
)
_PROCESS_ID = flag_kinds.define_number(
    "process_id", None, "With --coordinator_address.", low=0, high=65535, unit="from 0"
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runtime.set_up()
    import jax

    from wavlejepa import checkpointing, config_validation

    if _MULTIHOST.value or _COORDINATOR.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    try:  # Before the trainer is imported: it imports TensorFlow (seconds, and log lines).
        config_validation.resolved(
            _CONFIG.value, num_devices=jax.device_count(), num_processes=jax.process_count()
        )
    except config_validation.ConfigError as e:
        cli.fail(str(e))

    from wavlejepa import train
    from wavlejepa.data import pipeline

    latest = os.path.join(_WORKDIR.value, checkpointing.LATEST_DIR)
    steps_before = set(checkpointing.finished_steps(latest))
    try:  # A run that fails before a new checkpoint leaves the workdir as it found it.
        new_checkpoint = lambda: bool(set(checkpointing.finished_steps(latest)) - steps_before)  # noqa: E731
        with cli.outputs(_WORKDIR.value, keep=new_checkpoint):
            train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (
        config_validation.ConfigError,
        checkpointing.CheckpointError,
        pipeline.DatasetError,
    ) as e:
        cli.fail(str(e))
    except FloatingPointError as e:  # A diverged run: reporting.check_finite says what to try.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(cli.NON_FINITE)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
