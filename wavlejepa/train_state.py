"""The train state (params, optimizer state, step, rng) and AdamW with its LR schedule."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax

from wavlejepa import model


@chex.dataclass
class TrainState:
    step: jax.Array  # [] int32: optimizer steps taken.
    params: dict  # float32 model params.
    opt_state: optax.OptState
    rng: jax.Array  # [2] uint32 raw key; each step uses fold_in(rng, step).
    # loss.targets="ema": an EMA of the online waveform and context encoders (WavJEPA's
    # teacher); {} otherwise.
    teacher: dict


def teacher_of(params: dict) -> dict:
    """The parts of the model the EMA teacher copies: both encoders."""
    return {k: params[k] for k in ("waveform_encoder", "context_encoder")}


def update_teacher(teacher: dict, params: dict, decay: float) -> dict:
    """teacher <- decay * teacher + (1 - decay) * online, leaf by leaf ({} stays {})."""
    if not teacher:
        return teacher
    return optax.incremental_update(teacher_of(params), teacher, step_size=1.0 - decay)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up from 0 to peak_lr, then cosine decay to peak_lr * end_lr_fraction."""
    opt = config.optimizer
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.peak_lr,
        warmup_steps=opt.warmup_steps,
        decay_steps=max(config.total_steps, opt.warmup_steps + 1),
        end_value=opt.peak_lr * opt.end_lr_fraction,
    )


def _decay_mask(params: dict) -> dict:
    """Weight decay on matrices and conv kernels only: not on biases, norms or the mask token."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


def _conv_mask(params: dict) -> dict:
    """True on the conv front end's kernels (`waveform_encoder/conv_<i>`), False elsewhere."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: (
            path[0].key == "waveform_encoder"
            and path[1].key.startswith("conv_")
            and path[-1].key == "kernel"
        ),
        params,
    )


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW (decay on kernels only) after a global grad-norm clip; the conv kernels' updates
    are scaled by `optimizer.conv_lr_multiplier` (their learning rate times that)."""
    opt = config.optimizer
    adamw = optax.adamw(
        learning_rate_schedule(config),
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        mask=_decay_mask,
    )
    parts = [optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip > 0 else []
    parts.append(adamw)
    # Configs saved before this key existed (older checkpoints' config.json) trained at 1.
    conv_lr_multiplier = opt.get("conv_lr_multiplier", 1.0)
    if conv_lr_multiplier != 1.0:
        parts.append(optax.masked(optax.scale(conv_lr_multiplier), _conv_mask))
    # A lone AdamW stays unwrapped: at multiplier 1 the optimizer-state tree is the one it was
    # before the multiplier existed (clip then AdamW, or AdamW alone), so older runs resume.
    return optax.chain(*parts) if len(parts) > 1 else adamw


def create(rng: jax.Array, config: ml_collections.ConfigDict) -> TrainState:
    """A fresh state from a raw `[2] uint32` key (jax.random.PRNGKey(config.seed))."""
    k_params, k_steps = jax.random.split(rng)
    params = model.init(k_params, config.model)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=create_optimizer(config).init(params),
        rng=k_steps,
        teacher=teacher_of(params) if config.loss.targets == "ema" else {},
    )
