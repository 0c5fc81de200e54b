"""Checks a config before any compute: every problem named by its key, with the fix.

`validate(config, num_devices=..., num_processes=...)` raises one ConfigError listing them all, so
a bad run on a pod slice fails in seconds instead of after compiling (or hours in, at the first
eval or checkpoint).
"""

import math
import os

import ml_collections

from wavlejepa import config_kinds, evaluators, masking, model_sizes
from wavlejepa.data import pipeline, transforms
from wavlejepa.evaluators import linear_probe
from wavlejepa.nets import layers, transformer, waveform

DTYPES = ("float32", "bfloat16")
# AdamW moves every weight by about the learning rate each step, whatever the gradient's scale;
# the weights are O(0.1) at initialisation, so past 1 one step replaces the network and no run
# trains (the recipe uses 4e-4). A larger value is a typo (1e4 for 1e-4), refused before compute.
MAX_PEAK_LR = 1.0
# A LayerNorm eps only guards a division; one near the features' variance (O(1)) changes the
# network, so a larger value is a typo.
MAX_NORM_EPS = 1e-2


def _optimizer_and_schedule_problems(config: ml_collections.ConfigDict):
    opt = config.optimizer
    if not opt.peak_lr > 0:
        yield (
            f"config.optimizer.peak_lr={opt.peak_lr} must be > 0 "
            "(WavJEPA uses 4e-4; 1.5e-4 when SIGReg spikes)."
        )
    elif opt.peak_lr > MAX_PEAK_LR:
        yield (
            f"config.optimizer.peak_lr={opt.peak_lr} must be at most {MAX_PEAK_LR:g}: AdamW "
            "moves every weight by about that much each step (WavJEPA uses 4e-4: check the "
            "exponent's sign)."
        )
    if opt.warmup_steps < 0:
        yield f"config.optimizer.warmup_steps={opt.warmup_steps} must be >= 0."
    if not 0.0 <= opt.end_lr_fraction <= 1.0:
        yield f"config.optimizer.end_lr_fraction={opt.end_lr_fraction} must be in [0, 1]."
    if opt.weight_decay < 0 or opt.grad_clip < 0:
        yield "config.optimizer.weight_decay and grad_clip must be >= 0 (grad_clip 0 = off)."

    for key in (
        "total_steps",
        "log_every_steps",
        "eval_every_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
    ):
        if config[key] < 1:
            yield f"config.{key}={config[key]} must be >= 1."
    if config.keep_best < 0:
        yield f"config.keep_best={config.keep_best} must be >= 0 (0 keeps no best checkpoint)."
    every, saved = config.keep_checkpoints_every, config.checkpoint_every_steps
    if every < 0 or (every and saved >= 1 and every % saved):
        yield (
            f"config.keep_checkpoints_every={every} must be 0 or a multiple of "
            f"checkpoint_every_steps={saved} (only saved steps can be kept): try {saved * 10}."
        )


def _batch_and_model_problems(config: ml_collections.ConfigDict, num_devices, num_processes):
    if config.model.size not in model_sizes.SIZES:
        yield f"config.model.size={config.model.size!r}: choose one of {sorted(model_sizes.SIZES)}."
    batch, crops = config.batch_size, config.dataset.crops_per_clip
    # A suggestion passes both checks below: a multiple of the devices and of every host's crops.
    unit = math.lcm(num_devices, num_processes * max(crops, 1))
    suggestion = max(1, round(batch / unit)) * unit
    if batch < 1 or batch % num_devices:
        yield (
            f"config.batch_size={batch} must be a positive multiple of the {num_devices} devices "
            f"(each gets an equal share): try {suggestion}."
        )
    elif crops < 1 or (batch // num_processes) % crops:
        yield (
            f"config.batch_size / {num_processes} hosts = {batch // num_processes} crops per "
            f"host must be a multiple of config.dataset.crops_per_clip={crops} (a clip's crops "
            f"go to one batch): change either"
            + (f", e.g. config.batch_size={suggestion}." if crops >= 1 else ".")
        )

    if config.model.dtype not in DTYPES:
        yield f"config.model.dtype={config.model.dtype!r}: choose one of {DTYPES}."
    yield from _form_problems(config.model)
    init_from = config.get("init_from", "")
    if init_from and "://" not in init_from and not os.path.isdir(os.path.expanduser(init_from)):
        yield (
            f"config.init_from={init_from!r} is not a folder: give the --output folder of "
            "`python -m wavlejepa.import_wavjepa`, or a run's workdir ('' = random init)."
        )


def _form_problems(model: ml_collections.ConfigDict):
    if model.block_norm not in transformer.BLOCK_NORMS:
        yield (
            f"config.model.block_norm={model.block_norm!r}: choose one of "
            f"{transformer.BLOCK_NORMS} (WavJEPA's blocks are 'post')."
        )
    if model.gelu not in layers.GELUS:
        yield f"config.model.gelu={model.gelu!r}: choose one of {layers.GELUS} (WavJEPA: 'exact')."
    eps = model.encoder_final_norm_eps
    if not (isinstance(eps, int | float) and 0 < eps <= MAX_NORM_EPS):
        yield (
            f"config.model.encoder_final_norm_eps={eps} must be a number in (0, {MAX_NORM_EPS:g}] "
            "(1e-6 ours, 1e-5 WavJEPA's)."
        )
    if model.projection_init == "identity" and model.conv_channels != model.encoder_width:
        yield (
            f"config.model.projection_init='identity' needs conv_channels == encoder_width, "
            f"not {model.conv_channels} and {model.encoder_width}: use 'normal', or set the "
            "two widths equal (model.size=small has 256 and 256)."
        )


def _loss_and_data_problems(config: ml_collections.ConfigDict):
    loss = config.loss
    if not 0.0 <= loss.sigreg_weight <= 1.0:
        yield f"config.loss.sigreg_weight={loss.sigreg_weight} must be in [0, 1]."
    if not 0.0 <= loss.clip_sigreg_weight <= 1.0:
        yield f"config.loss.clip_sigreg_weight={loss.clip_sigreg_weight} must be in [0, 1]."
    if loss.num_slices < 1 or loss.num_knots < 2 or not loss.t_max > 0:
        yield "config.loss needs num_slices >= 1, num_knots >= 2 and t_max > 0."
    if loss.sigreg_crops < 2 or loss.sigreg_frames < 1:
        yield (
            f"config.loss.sigreg_crops={loss.sigreg_crops} and sigreg_frames="
            f"{loss.sigreg_frames}: SIGReg's sample needs at least 2 crops and 1 frame (the "
            "recipe: 32 and 50)."
        )

    model = config.model
    if len(model.conv_kernels) != len(model.conv_strides):
        yield (
            f"config.model.conv_kernels={model.conv_kernels} and conv_strides="
            f"{model.conv_strides} must have one entry per conv layer each (the same length)."
        )
    elif not any(key.startswith(("model.conv", "dataset.")) for key, _ in _kind_problems(config)):
        try:  # The frames of a crop, and masks that fit them (from valid conv and crop keys).
            num_frames = waveform.num_frames(transforms.crop_samples(config.dataset), model)
            masking.validate(config.masking, num_frames)
        except ValueError as e:
            yield f"config.dataset.crop_seconds / config.masking: {e}"

    yield from pipeline.problems(config.dataset)
    if config.dataset.eval_batches < 0:
        yield f"config.dataset.eval_batches={config.dataset.eval_batches} must be >= 0 (0 = off)."
    if not 0 < config.health.sigreg_collapse_fraction <= 1 or config.health.loss_jump_factor <= 1:
        yield "config.health needs 0 < sigreg_collapse_fraction <= 1 and loss_jump_factor > 1."
    if not 0 <= config.health.min_rank_fraction < 1:
        yield (
            f"config.health.min_rank_fraction={config.health.min_rank_fraction} must be in [0, 1) "
            "(0 turns the rank warning off)."
        )
    if config.profile.enabled and config.profile.num_steps < 1:
        yield "config.profile.num_steps must be >= 1 when config.profile.enabled."


def _evaluator_problems(config: ml_collections.ConfigDict):
    for name in config.evals:
        if name not in evaluators.names():
            yield (
                f"config.evals.{name}: no evaluator of that name; registered: "
                f"{evaluators.names()} (add a module to wavlejepa/evaluators/ that registers it)."
            )
        data = config.evals[name].get("data", "sample")
        if linear_probe.TASKS.get(name) == "label":  # A prepared dataset's name, not a folder.
            continue
        if data != "sample" and not os.path.isdir(os.path.expanduser(data)):
            yield (
                f"config.evals.{name}.data={data!r} is not a folder: give 'sample' (the clips in "
                "the package) or a folder of FSDD recordings."
            )


def _problems(config: ml_collections.ConfigDict, num_devices: int, num_processes: int):
    """Yields one message per problem found: a key its kind refuses (config_kinds) unless a
    check below names that key with a more specific message, then those checks."""
    specific = list(_specific_problems(config, num_devices, num_processes))
    for key, problem in _kind_problems(config):
        if not any(f"config.{key}=" in message for message in specific):
            yield problem
    yield from specific


def _kind_problems(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    return list(config_kinds.problems(config))


def _specific_problems(config: ml_collections.ConfigDict, num_devices: int, num_processes: int):
    yield from _optimizer_and_schedule_problems(config)
    yield from _batch_and_model_problems(config, num_devices, num_processes)
    yield from _loss_and_data_problems(config)
    yield from _evaluator_problems(config)


class ConfigError(ValueError):
    """A config that cannot run; the message names every bad key."""


def validate(
    config: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1
) -> None:
    """Raises ConfigError naming every bad key of `config` for a run on these devices/hosts."""
    problems = list(_problems(config, num_devices, num_processes))
    if problems:
        raise ConfigError("invalid config: " + " ".join(problems))


def resolved(
    config: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1
) -> ml_collections.ConfigDict:
    """A copy of `config` with its model size's numbers filled in (model_sizes.resolve) and `~`
    and $VARS expanded in its paths, after `validate` found no problem; an unknown size is left
    for `validate` to name."""
    config = ml_collections.ConfigDict(config.to_dict())
    for key, kind in config_kinds.KINDS.items():
        group, _, name = key.rpartition(".")
        holder = config[group] if group else config
        if isinstance(kind, config_kinds.Path) and isinstance(holder.get(name), str):
            holder[name] = config_kinds.expand(holder[name])
    if config.model.size in model_sizes.SIZES:
        config.model = model_sizes.resolve(config.model)
    validate(config, num_devices=num_devices, num_processes=num_processes)
    return config
