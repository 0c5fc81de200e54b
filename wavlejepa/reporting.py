"""Metrics out of the train loop: CLU writers, metrics.jsonl, optional wandb, health checks.

Train metrics are read from the device one step late (after the next step is dispatched), every
step, so a non-finite loss stops the run before any checkpoint holds its params. A logged step
is the number of updates done, counting its own: the loss of step s is that of the params after
s - 1 updates.
"""

import json
import math
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from wavlejepa import sigreg

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"  # The run's full config, written into the workdir at start.
# The longest warm-up the advice after a spike names: the lower-LR recipe's.
MAX_ADVISED_WARMUP = 7_500


def calmer_settings(config: ml_collections.ConfigDict) -> str:
    """The overrides to try after a spike, fitted to this run: half its peak learning rate and,
    when its own warm-up is shorter, one of a tenth of its total_steps (at most
    MAX_ADVISED_WARMUP), so a short run is never told to warm up for longer than it lasts."""
    optimizer = config.optimizer
    advice = f"--config.optimizer.peak_lr={optimizer.peak_lr / 2:.3g}"
    warmup = min(config.total_steps // 10, MAX_ADVISED_WARMUP)
    if warmup > optimizer.warmup_steps:
        advice += f" --config.optimizer.warmup_steps={warmup}"
    return advice


def _fix(config: ml_collections.ConfigDict) -> str:
    return f"the peak learning rate is likely too high: try {calmer_settings(config)}"


def health_warnings(
    step: int, scalars: dict, previous_loss: float | None, config: ml_collections.ConfigDict
) -> list[str]:
    """Warnings for a SIGReg near collapse (after warm-up) or a loss jump at a logged step, each
    naming a likely cause."""
    warnings, health = [], config.health
    collapsed = sigreg.sigreg_collapse_value(config)
    limit = health.sigreg_collapse_fraction * collapsed
    if step > config.optimizer.warmup_steps and scalars["sigreg"] > limit:
        warnings.append(
            f"SIGReg {scalars['sigreg']:.4g} at step {step} is above "
            f"config.health.sigreg_collapse_fraction={health.sigreg_collapse_fraction:g} of a "
            f"collapsed batch's {collapsed:.4g}: the embeddings are far from "
            f"Gaussian (collapse or blow-up); {_fix(config)}."
        )
    if previous_loss is not None and scalars["loss"] > health.loss_jump_factor * previous_loss:
        warnings.append(
            f"Loss jumped from {previous_loss:.4g} to {scalars['loss']:.4g} at step {step} (more "
            f"than config.health.loss_jump_factor={health.loss_jump_factor:g}x); {_fix(config)}."
        )
    return warnings


def rank_warnings(
    step: int, encoder_rank: float, first_rank: float, config: ml_collections.ConfigDict
) -> list[str]:
    """A warning when an eval's encoder effective rank fell below config.health.min_rank_fraction
    of the run's first eval's (the initial params' with config.eval_before_training)."""
    fraction = config.health.min_rank_fraction
    if encoder_rank >= fraction * first_rank:
        return []
    return [
        f"Encoder effective rank {encoder_rank:.4g} at step {step} is below "
        f"config.health.min_rank_fraction={fraction:g} of the first eval's {first_rank:.4g}: the "
        "frames collapse onto a few directions (the prediction shortcut is winning); check that "
        "--config.loss.sigreg_weight was not lowered and try a lower --config.optimizer.peak_lr."
    ]


def first_eval_value(path: epath.Path, key: str) -> float | None:
    """`key` of the first eval record of a metrics.jsonl holding it; None without one."""
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # A line cut short by a kill.
            continue
        if record.get("split") == "eval" and key in record:
            return record[key]
    return None


def check_finite(step: int, scalars: dict, config: ml_collections.ConfigDict | None = None) -> None:
    """Raises FloatingPointError naming the step and every non-finite metric, and what to try
    (fitted to `config` when given)."""
    bad = {k: v for k, v in scalars.items() if not math.isfinite(v)}
    if bad:
        lower = (
            calmer_settings(config) if config is not None else "a lower --config.optimizer.peak_lr"
        )
        raise FloatingPointError(
            f"Non-finite {', '.join(f'{k}={v}' for k, v in sorted(bad.items()))} at step {step}. "
            "Stopped without saving: the latest checkpoint predates it and is kept. Likely "
            f"causes: a peak learning rate too high (try {lower}) or a batch of bad audio "
            "(NaN/inf samples)."
        )


def _rewind(path: epath.Path, last_step: int) -> None:
    """Keeps the records of steps <= last_step: a resumed run writes the later ones again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError):  # A line cut short by a kill.
            continue
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


class _JsonLines:
    """metrics.jsonl: one JSON object per line, on disk after every write. Cloud buckets cannot
    append, so there the (small) file is rewritten instead."""

    def __init__(self, path: epath.Path, start_step: int):
        _rewind(path, start_step)
        self._path = path
        self._remote = "://" in str(path)
        self._lines = path.read_text().splitlines(keepends=True) if self._remote else []
        self._file = None if self._remote else path.open("a")

    def write(self, record: dict) -> None:
        line = json.dumps({k: v if k in ("step", "split") else float(v) for k, v in record.items()})
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        else:
            self._lines.append(line + "\n")
            self._path.write_text("".join(self._lines))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _wandb_run(config: ml_collections.ConfigDict, workdir: epath.Path):
    if not config.wandb.project or jax.process_index() > 0:
        return None
    try:
        import wandb
    except ImportError:
        logging.warning("config.wandb.project is set but wandb is not installed; skipping it.")
        return None
    return wandb.init(project=config.wandb.project, dir=str(workdir), config=config.to_dict())


class Reporter:
    """Writes train and eval metrics of one run; process 0 writes files, others only log."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict, *, start_step: int):
        workdir = epath.Path(workdir)
        self._primary = jax.process_index() == 0
        self.writer = metric_writers.create_default_writer(workdir, just_logging=not self._primary)
        self._jsonl = None
        if self._primary:
            self._jsonl = _JsonLines(workdir / METRICS_FILE, start_step)
        self._wandb = _wandb_run(config, workdir)
        self._config = config
        self._pending = None  # (step, device metrics) not read yet.
        self._last_log = (start_step, time.monotonic())
        self._previous_loss = None
        # The baseline of rank_warnings: on resume, the first eval's value already on record.
        self._first_rank = first_eval_value(workdir / METRICS_FILE, "eval_encoder_rank")
        self._log_action = periodic_actions.PeriodicCallback(
            every_steps=config.log_every_steps,
            on_steps=[config.total_steps],
            callback_fn=self._log_train,
        )

    def train_step(self, step: int, metrics: dict) -> None:
        """Takes the device metrics of `step` just dispatched; reads those of the step before."""
        self.flush()
        self._pending = (step, metrics)

    def flush(self) -> None:
        """Reads the pending step's metrics now (before a checkpoint or eval of its state)."""
        if self._pending is None:
            return
        step, metrics = self._pending
        self._pending = None
        scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
        try:
            check_finite(step, scalars, self._config)
        except FloatingPointError:
            self.write(step, "train", scalars)  # The bad step is on record, logged or not.
            raise
        self._log_action(step, scalars=scalars)

    def _log_train(self, step: int, t: float, scalars: dict) -> None:
        last_step, last_t = self._last_log
        steps_per_sec = (step - last_step) / max(t - last_t, 1e-9)
        self._last_log = (step, t)
        scalars = dict(
            scalars,
            steps_per_sec=steps_per_sec,
            examples_per_sec=steps_per_sec * self._config.batch_size,
        )
        for warning in health_warnings(step, scalars, self._previous_loss, self._config):
            logging.warning(warning)
        self._previous_loss = scalars["loss"]
        self.write(step, "train", scalars)

    def write_eval(self, step: int, results: dict) -> None:
        """Writes an eval's results (split "eval"), first warning when its "encoder_rank" fell
        below a share of the run's first (`rank_warnings`)."""
        if "encoder_rank" in results:
            rank = float(results["encoder_rank"])
            self._first_rank = rank if self._first_rank is None else self._first_rank
            for warning in rank_warnings(step, rank, self._first_rank, self._config):
                logging.warning(warning)
        self.write(step, "eval", results)

    def write(self, step: int, split: str, scalars: dict) -> None:
        """To the writers (log, TensorBoard), metrics.jsonl and wandb; eval keys get "eval_"."""
        if split != "train":
            scalars = {f"{split}_{k}": v for k, v in scalars.items()}
        self.writer.write_scalars(step, scalars)
        if self._jsonl is not None:
            self._jsonl.write({"step": step, "split": split, **scalars})
        if self._wandb is not None:
            self._wandb.log({k: float(np.asarray(v)) for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._wandb is not None:
            self._wandb.finish()
