"""The WavLeJEPA objective: (1 - lambda) * invariance + lambda * SIGReg.

Invariance is the MSE between predicted and actual target representations (no teacher, no
stop-gradient); SIGReg pushes the projected context embeddings towards an isotropic Gaussian.
"""

import jax
import jax.numpy as jnp
import ml_collections

from wavlejepa import masking, model, sigreg
from wavlejepa.nets import waveform


def invariance(
    predictions_BxGxQxD: jax.Array, targets_BxGxQxD: jax.Array, valid_BxGxQ: jax.Array
) -> jax.Array:
    """Squared error averaged over the feature axis, then over all valid target frames."""
    diff = predictions_BxGxQxD.astype(jnp.float32) - targets_BxGxQxD.astype(jnp.float32)
    per_frame = jnp.mean(jnp.square(diff), axis=-1)
    valid = valid_BxGxQ.astype(jnp.float32)
    return jnp.sum(per_frame * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def objective(
    params: dict, audio_BxS: jax.Array, key: jax.Array, config: ml_collections.ConfigDict
) -> tuple[jax.Array, dict]:
    """Loss of one batch of crops and its metrics; `key` draws the masks and SIGReg slices."""
    k_masks, k_slices = jax.random.split(key)
    batch, num_samples = audio_BxS.shape
    num_frames = waveform.num_frames(num_samples, config.model)
    masks = masking.sample(k_masks, config.masking, batch, num_frames)
    out = model.forward(params, audio_BxS, masks, config.model)

    inv = invariance(out["predictions"], out["targets"], out["target_valid"])
    directions = sigreg.random_directions(
        k_slices, config.model.projector_dim, config.loss.num_slices
    )
    if config.loss.sigreg_on == "pooled":
        reg = sigreg.sigreg(
            out["projected_pooled"], directions, config.loss.t_max, config.loss.num_knots
        )
    elif config.loss.sigreg_on == "frames":
        reg = sigreg.sigreg(
            out["projected_frames"].reshape(-1, config.model.projector_dim),
            directions,
            config.loss.t_max,
            config.loss.num_knots,
            weights_N=out["context_valid"].reshape(-1),
        )
    else:
        raise ValueError(
            f"config.loss.sigreg_on must be 'pooled' or 'frames', got {config.loss.sigreg_on!r}."
        )
    weight = config.loss.sigreg_weight
    loss = (1.0 - weight) * inv + weight * reg
    metrics = {
        "loss": loss,
        "invariance": inv,
        "sigreg": reg,
        "context_frames": jnp.mean(masks.context_lengths.astype(jnp.float32)),
    }
    return loss, metrics
