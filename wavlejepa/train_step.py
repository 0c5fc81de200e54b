"""`train_step` and `eval_step`: pure functions of (state, batch), jitted by the caller.

Per-step randomness is `fold_in(state.rng, state.step)`, so a resumed run redraws the same masks
and SIGReg slices. Under `jit` with the batch sharded over a data mesh every mean in the loss is
global, so N in SIGReg is the global batch and the result does not depend on the device count.
"""

import jax
import ml_collections
import optax

from wavlejepa import diagnostics, losses, train_state


def _optional_inputs(batch: dict) -> dict:
    """The objective's keyword inputs from a batch: its "lengths" and "clip_starts" (None when
    the pipeline gives none)."""
    return {"lengths_B": batch.get("lengths"), "clip_starts_BxC": batch.get("clip_starts")}


def _objective(params: dict, batch: dict, key: jax.Array, config: ml_collections.ConfigDict):
    """`losses.objective` of `params` on a batch."""
    return losses.objective(params, batch["audio"], key, config, **_optional_inputs(batch))


def train_step(
    state: train_state.TrainState, batch: dict, *, config: ml_collections.ConfigDict
) -> tuple[train_state.TrainState, dict]:
    """One AdamW step on `batch["audio"] [batch, samples]` (with `batch["lengths"] [batch]`, real
    samples per crop, when the pipeline pads, and `batch["clip_starts"] [batch, clips]` when it
    packs); returns the new state and metrics."""
    key = jax.random.fold_in(state.rng, state.step)
    grad_fn = jax.value_and_grad(_objective, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, batch, key, config)
    optimizer = train_state.create_optimizer(config)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["learning_rate"] = train_state.learning_rate_schedule(config)(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def ranks(frames_BxTxD: jax.Array, z_BxTxP: jax.Array, valid_BxT: jax.Array) -> dict:
    """Effective ranks (`diagnostics.effective_rank`) over the real frames (`valid [B, T]`) of
    a batch: of the context encoder's output over all frames (`model.embed`, what users take)
    as "encoder_rank", and of its projection z (what SIGReg tests) as "projected_rank"."""
    valid_N = valid_BxT.reshape(-1)
    flat = lambda x_BxTxD: x_BxTxD.reshape(-1, x_BxTxD.shape[-1])
    return {
        "encoder_rank": diagnostics.effective_rank(flat(frames_BxTxD), valid_N),
        "projected_rank": diagnostics.effective_rank(flat(z_BxTxP), valid_N),
    }


def eval_step(
    state: train_state.TrainState, batch: dict, *, config: ml_collections.ConfigDict
) -> dict:
    """The training losses on a held-out batch, without gradients (masks from a fixed key), and
    the `ranks` of the frames its forward pass encoded (the encoder runs once)."""
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
    _, metrics, out = losses.objective_and_outputs(
        state.params, batch["audio"], key, config, **_optional_inputs(batch)
    )
    return {**metrics, **ranks(out["encoder_frames"], out["projected_frames"], out["frame_valid"])}
