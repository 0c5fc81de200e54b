"""The whole WavLeJEPA model: params of its four networks, the embedding, the training forward.

waveform encoder: audio [B, S] -> frames [B, T, D] (+ sin-cos positions)
context encoder:  transformer over all T frames (targets, embeddings) or the context frames
predictor:        context -> predictions at the target frames of each group
projector:        pooled context embedding -> SIGReg space (training only)
"""

import jax
import jax.numpy as jnp
import ml_collections

from wavlejepa import masking
from wavlejepa.nets import encoder, predictor, projector, waveform


def init(key: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
    """Float32 params: {"waveform_encoder", "context_encoder", "predictor", "projector"}."""
    k_wave, k_enc, k_pred, k_proj = jax.random.split(key, 4)
    return {
        "waveform_encoder": waveform.init(k_wave, cfg),
        "context_encoder": encoder.init(k_enc, cfg),
        "predictor": predictor.init(k_pred, cfg),
        "projector": projector.init(k_proj, cfg),
    }


def embed(params: dict, audio_BxS: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """Frame embeddings `[batch, frames, encoder_width]` at 100 Hz: all frames, no masking.

    `audio` is 16 kHz, each row normalised to zero mean and unit variance (as in training).
    """
    frames_BxTxD = waveform.apply(params["waveform_encoder"], audio_BxS, cfg)
    return encoder.apply(params["context_encoder"], frames_BxTxD, cfg)


def _gather_frames(x_BxTxD: jax.Array, indices_BxK: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x_BxTxD, indices_BxK[:, :, None], axis=1)


def _masked_mean(x_BxKxD: jax.Array, lengths_B: jax.Array) -> jax.Array:
    valid_BxK = jnp.arange(x_BxKxD.shape[1])[None, :] < lengths_B[:, None]
    total = jnp.einsum("bkd,bk->bd", x_BxKxD.astype(jnp.float32), valid_BxK.astype(jnp.float32))
    return total / jnp.maximum(lengths_B, 1)[:, None].astype(jnp.float32)


def forward(
    params: dict, audio_BxS: jax.Array, masks: masking.Masks, cfg: ml_collections.ConfigDict
) -> dict:
    """The training forward pass. Returns a dict of:

    predictions [B, G, Q, D]: the predictor's output at each target frame of each group.
    targets [B, G, Q, D]: the encoder's representation of those frames over the whole crop
      (same params, gradients flow: LeJEPA has no teacher and no stop-gradient).
    target_valid [B, G, Q]: which (group, frame) entries are real.
    context [B, K, D], context_valid [B, K]: the encoded context frames.
    projected_pooled [B, P]: projector(mean of the valid context embeddings).
    projected_frames [B, K, P]: projector of every context frame (for per-frame SIGReg).
    """
    frames_BxTxD = waveform.apply(params["waveform_encoder"], audio_BxS, cfg)
    return forward_from_frames(params, frames_BxTxD, masks, cfg)


def forward_from_frames(
    params: dict, frames_BxTxD: jax.Array, masks: masking.Masks, cfg: ml_collections.ConfigDict
) -> dict:
    """`forward` after the waveform encoder (`frames [B, T, D]` with positions)."""
    batch, num_groups, group_frames = masks.target_indices.shape
    num_frames = frames_BxTxD.shape[1]

    with jax.named_scope("targets"):
        full_BxTxD = encoder.apply(params["context_encoder"], frames_BxTxD, cfg)
        targets = _gather_frames(full_BxTxD, masks.target_indices.reshape(batch, -1))
        targets_BxGxQxD = targets.reshape(batch, num_groups, group_frames, -1)

    with jax.named_scope("context"):
        context_frames = _gather_frames(frames_BxTxD, masks.context_indices)
        context_BxKxD = encoder.apply(
            params["context_encoder"], context_frames, cfg, lengths_B=masks.context_lengths
        )

    with jax.named_scope("predictor"):
        # One pass per target group, folded into the batch: [B * G, ...].
        predictions = predictor.apply(
            params["predictor"],
            jnp.repeat(context_BxKxD, num_groups, axis=0),
            jnp.repeat(masks.context_lengths, num_groups, axis=0),
            masks.target_indices.reshape(batch * num_groups, group_frames),
            masks.target_lengths.reshape(batch * num_groups),
            cfg,
            num_frames=num_frames,
        )
        predictions_BxGxQxD = predictions.reshape(batch, num_groups, group_frames, -1)

    with jax.named_scope("projector"):
        pooled_BxD = _masked_mean(context_BxKxD, masks.context_lengths)
        projected_pooled = projector.apply(params["projector"], pooled_BxD, cfg)
        projected_frames = projector.apply(params["projector"], context_BxKxD, cfg)

    capacity = masks.context_indices.shape[1]
    return {
        "predictions": predictions_BxGxQxD,
        "targets": targets_BxGxQxD,
        "target_valid": jnp.arange(group_frames)[None, None, :] < masks.target_lengths[..., None],
        "context": context_BxKxD,
        "context_valid": jnp.arange(capacity)[None, :] < masks.context_lengths[:, None],
        "projected_pooled": projected_pooled,
        "projected_frames": projected_frames,
    }
