"""Every config key's kind: a number's range in its own units, a choice's values, a path.

`config_validation` checks each key of a config against its row here, so a value nobody thought
of (NaN, inf, a negative count, 1e30) is refused by its range instead of reaching compute; the
relations between keys (a batch that the devices divide, masks that fit a crop) are checked
there too. A test asserts that every key of every config in configs/ has a row.
"""

import dataclasses
import math
import os
import re

_UNSET_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _number(x: float) -> str:
    """1048576 -> "1,048,576", 1e-06 -> "1e-06", 0.015 -> "0.015"."""
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


@dataclasses.dataclass(frozen=True)
class Number:
    """A number in [low, high] (`low` excluded if `open_low`), whole if `whole`; `unit` names
    what it counts, for the message."""

    low: float
    high: float
    whole: bool = True
    unit: str = ""
    open_low: bool = False

    def allowed(self) -> str:
        what = "a whole number" if self.whole else "a number"
        low, high = _number(self.low), _number(self.high)
        span = f"above {low} and up to" if self.open_low else f"from {low} to"
        return f"{what} {span} {high}" + (f" ({self.unit})" if self.unit else "")

    def problem(self, value) -> str:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        ok = (
            numeric
            and math.isfinite(value)
            and (self.low < value if self.open_low else self.low <= value)
            and value <= self.high
            and (not self.whole or float(value).is_integer())
        )
        return "" if ok else f"must be {self.allowed()}"


@dataclasses.dataclass(frozen=True)
class Numbers:
    """A tuple of numbers, each as `item` says."""

    item: Number

    def problem(self, value) -> str:
        if not isinstance(value, tuple | list) or not value:
            return f"must be a non-empty tuple, each item {self.item.allowed()}"
        bad = [v for v in value if self.item.problem(v)]
        return f"each item must be {self.item.allowed()} (not {bad[0]})" if bad else ""


@dataclasses.dataclass(frozen=True)
class Path:
    """A local or remote (gs://...) path; "" = unset. Its file-system checks are in
    config_validation (they depend on other keys: a dataset is built only when missing)."""

    def problem(self, value) -> str:
        if not isinstance(value, str):
            return "must be a path (a string)"
        name = unset_variable(os.path.expandvars(value))
        return f"${name} is not set in the environment" if name else ""


@dataclasses.dataclass(frozen=True)
class Text:
    """Free text (a name); `empty_ok` says whether "" is valid."""

    empty_ok: bool = False

    def problem(self, value) -> str:
        if not isinstance(value, str) or (not value and not self.empty_ok):
            return "must be a non-empty name"
        return ""


@dataclasses.dataclass(frozen=True)
class Flag:
    """True or False."""

    def problem(self, value) -> str:
        return "" if isinstance(value, bool) else "must be True or False"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of `values`."""

    values: tuple

    def problem(self, value) -> str:
        return "" if value in self.values else f"choose one of {self.values}"


def unset_variable(expanded: str) -> str:
    """The name of a `$VAR` left in a path after os.path.expandvars (it is not set), or ""."""
    unset = _UNSET_VARIABLE.search(expanded)
    return (unset.group(1) or unset.group(2)) if unset else ""


def expand(value: str) -> str:
    """A path value with `~` and $VARS expanded (remote paths as they are)."""
    if not value or "://" in value:
        return value
    return os.path.expanduser(os.path.expandvars(value))


_STEPS = Number(1, 1e9, unit="steps")
_SHARE = Number(0, 1, whole=False, unit="a share")
_WIDTH = Number(1, 2**20, unit="features")
_LAYERS = Number(1, 1000, unit="layers")
_HEADS = Number(1, 1024, unit="heads")

KINDS = {
    "seed": Number(0, 2**31 - 1),
    "total_steps": _STEPS,
    "batch_size": Number(1, 2**20, unit="crops per step"),
    "log_every_steps": _STEPS,
    "eval_every_steps": _STEPS,
    "eval_before_training": Flag(),
    "checkpoint_every_steps": _STEPS,
    "keep_checkpoints": Number(1, 1000, unit="checkpoints"),
    "keep_checkpoints_every": Number(0, 1e9, unit="steps"),
    "keep_best": Number(0, 1000, unit="checkpoints"),
    "debug_dummy_data": Flag(),
    "init_from": Path(),
    "model.size": Choice(("base", "small", "tiny")),
    "model.conv_channels": _WIDTH,
    "model.conv_kernels": Numbers(Number(1, 1024, unit="samples")),
    "model.conv_strides": Numbers(Number(1, 1024, unit="samples")),
    "model.encoder_width": _WIDTH,
    "model.encoder_depth": _LAYERS,
    "model.encoder_heads": _HEADS,
    "model.encoder_mlp_dim": _WIDTH,
    "model.encoder_final_norm_eps": Number(0, 1e-2, whole=False, open_low=True),
    "model.predictor_width": _WIDTH,
    "model.predictor_depth": _LAYERS,
    "model.predictor_heads": _HEADS,
    "model.predictor_mlp_dim": _WIDTH,
    "model.projector_dim": _WIDTH,
    "model.projector_hidden_dims": Numbers(_WIDTH),
    "model.dtype": Choice(("float32", "bfloat16")),
    "model.block_norm": Choice(("pre", "post")),
    "model.gelu": Choice(("tanh", "exact")),
    "model.projection_init": Choice(("normal", "identity")),
    "model.remat": Flag(),
    "model.scan_layers": Flag(),
    "masking.span_frames": Number(1, 100_000, unit="frames"),
    "masking.num_target_groups": Number(1, 1000, unit="groups"),
    "masking.spans_per_target_group": Number(1, 10_000, unit="spans"),
    "masking.num_context_drop_spans": Number(0, 10_000, unit="spans"),
    "masking.min_context_fraction": _SHARE,
    "masking.max_context_fraction": _SHARE,
    "masking.max_redraws": Number(1, 10_000, unit="redraws"),
    "loss.sigreg_weight": _SHARE,
    "loss.clip_sigreg_weight": _SHARE,
    "loss.sigreg_crops": Number(2, 2**20, unit="crops"),
    "loss.sigreg_frames": Number(1, 100_000, unit="frames"),
    "loss.num_slices": Number(1, 2**16, unit="projections"),
    "loss.t_max": Number(0, 100, whole=False, open_low=True),
    "loss.num_knots": Number(2, 1024, unit="knots"),
    "optimizer.peak_lr": Number(0, 1, whole=False, open_low=True),
    "optimizer.warmup_steps": Number(0, 1e9, unit="steps"),
    "optimizer.end_lr_fraction": _SHARE,
    "optimizer.weight_decay": Number(0, 10, whole=False),
    "optimizer.b1": Number(0, 1, whole=False),
    "optimizer.b2": Number(0, 1, whole=False),
    "optimizer.eps": Number(0, 1, whole=False, open_low=True),
    "optimizer.grad_clip": Number(0, 1e6, whole=False, unit="0 = off"),
    "dataset.name": Text(),
    "dataset.data_dir": Path(),
    "dataset.audio_dir": Path(),
    "dataset.split": Text(),
    "dataset.eval_split": Text(),
    "dataset.audio_key": Text(),
    "dataset.sample_rate": Number(1000, 384_000, unit="Hz"),
    "dataset.crop_seconds": Number(0.015, 600, whole=False, unit="seconds"),
    "dataset.crops_per_clip": Number(1, 1024, unit="crops"),
    "dataset.short_clips": Choice(("pack", "pad", "skip")),
    "dataset.num_workers": Number(0, 256, unit="processes"),
    "dataset.eval_batches": Number(0, 1e6, unit="batches"),
    "dataset.label_from": Choice(("none", "folder", "csv")),
    "dataset.label_csv": Path(),
    "dataset.validation_fraction": _SHARE,
    "dataset.test_fraction": _SHARE,
    "dataset.min_duration_seconds": Number(0, 3600, whole=False, unit="seconds"),
    "health.sigreg_collapse_fraction": Number(0, 1, whole=False, open_low=True),
    "health.loss_jump_factor": Number(1, 1e6, whole=False, open_low=True),
    "health.min_rank_fraction": Number(0, 1, whole=False),
    "profile.enabled": Flag(),
    "profile.first_step": Number(0, 1e9, unit="step"),
    "profile.num_steps": Number(1, 1e6, unit="steps"),
    "wandb.project": Text(empty_ok=True),
}
# Groups whose keys are free (one entry per evaluator, each with its own knobs).
FREE_GROUPS = ("evals",)


def leaves(config, prefix: str = ""):
    """Yields (dotted key, value) of every leaf of a ConfigDict."""
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def problems(config):
    """Yields (key, "config.<key>=<value>: <problem>.") for each key its kind refuses."""
    for key, value in leaves(config):
        kind = KINDS.get(key)
        if kind is None or value is None:  # None: a model size's number not filled in yet.
            continue
        problem = kind.problem(value)
        if problem:
            yield key, f"config.{key}={value!r}: {problem}."
