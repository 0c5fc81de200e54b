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


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW (decay on kernels only), after a global grad-norm clip unless `grad_clip` is 0."""
    opt = config.optimizer
    adamw = optax.adamw(
        learning_rate_schedule(config),
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        weight_decay=opt.weight_decay,
        mask=_decay_mask,
    )
    if opt.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(opt.grad_clip), adamw)
    return adamw


def create(
    rng: jax.Array, config: ml_collections.ConfigDict, encoder_params: dict | None = None
) -> TrainState:
    """A fresh state from a raw `[2] uint32` key (jax.random.PRNGKey(config.seed)).

    `encoder_params` (`{"waveform_encoder", "context_encoder"}`, `config.init_from`'s) replace
    the initial encoder path; the predictor and projector are new either way.
    """
    k_params, k_steps = jax.random.split(rng)
    params = model.init(k_params, config.model)
    if encoder_params is not None:
        chex.assert_trees_all_equal_shapes_and_dtypes(
            encoder_params, {name: params[name] for name in model.EMBEDDING_NETWORKS}
        )
        params = params | encoder_params
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=create_optimizer(config).init(params),
        rng=k_steps,
    )
