"""The whole WavLeJEPA model: params of its four networks, the embedding, the training forward.

waveform encoder: audio [B, S] -> frames [B, T, D] (+ sin-cos positions)
context encoder:  transformer over all T frames (targets, embeddings) or the context frames
predictor:        context -> predictions at the target frames of each group
projector:        encoder and predictor outputs -> SIGReg space, where the loss compares them
                  (training only)
"""

import chex
import jax
import jax.numpy as jnp
import ml_collections

from wavlejepa import masking
from wavlejepa.nets import encoder, predictor, projector, waveform

# The networks `embed` uses: what a model for use (and `import_wavjepa`) holds at least.
EMBEDDING_NETWORKS = ("waveform_encoder", "context_encoder")
# The config.model keys those networks are built from: two encoders agreeing on these are the
# same network (a checkpoint's encoder can be trained on under a config that matches them).
EMBEDDING_KEYS = ("conv_kernels", "conv_strides", "conv_channels", "encoder_width",
                  "encoder_depth", "encoder_heads", "encoder_mlp_dim", "block_norm", "gelu",
                  "encoder_final_norm_eps")  # fmt: skip


def init(key: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
    """Float32 params: {"waveform_encoder", "context_encoder", "predictor", "projector"}."""
    k_wave, k_enc, k_pred, k_proj = jax.random.split(key, 4)
    return {
        "waveform_encoder": waveform.init(k_wave, cfg),
        "context_encoder": encoder.init(k_enc, cfg),
        "predictor": predictor.init(k_pred, cfg),
        "projector": projector.init(k_proj, cfg),
    }


def embed(
    params: dict,
    audio_BxS: jax.Array,
    cfg: ml_collections.ConfigDict,
    *,
    lengths_B: jax.Array | None = None,
) -> jax.Array:
    """Frame embeddings `[batch, frames, encoder_width]` at 100 Hz: all frames, no masking.

    `audio` is 16 kHz, each row normalised to zero mean and unit variance (as in training). With
    `lengths [batch]` (real samples at the start of each row, the rest padding) the padding is
    excluded from the front end's normalisation and from attention; frames past
    `waveform.valid_frames(lengths)` are not embeddings of anything.
    """
    frames_BxTxD = waveform.apply(params["waveform_encoder"], audio_BxS, cfg, lengths_B=lengths_B)
    valid_B = None if lengths_B is None else waveform.valid_frames(lengths_B, cfg)
    return encoder.apply(params["context_encoder"], frames_BxTxD, cfg, lengths_B=valid_B)


def _gather_frames(x_BxTxD: jax.Array, indices_BxK: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x_BxTxD, indices_BxK[:, :, None], axis=1)


def at_targets(x_BxTxD: jax.Array, masks: masking.Masks) -> jax.Array:
    """x at every target frame of every group: [B, G, Q, D]."""
    batch, groups, group_frames = masks.target_indices.shape
    gathered_BxNxD = _gather_frames(x_BxTxD, masks.target_indices.reshape(batch, -1))
    return gathered_BxNxD.reshape(batch, groups, group_frames, -1)


def _predict(
    predictor_params: dict,
    context_BxKxD: jax.Array,
    masks: masking.Masks,
    cfg: ml_collections.ConfigDict,
    num_frames: int,
) -> jax.Array:
    """The predictor's output at every target frame of every group: [B, G, Q, D]. One pass
    per target group, folded into the batch ([B * G, ...]); the groups of a crop share its
    context's projection, keys and values."""
    batch, num_groups, group_frames = masks.target_indices.shape
    predictions_NxQxD = predictor.apply(
        predictor_params,
        context_BxKxD,
        masks.context_lengths,
        masks.target_indices.reshape(batch * num_groups, group_frames),
        masks.target_lengths.reshape(batch * num_groups),
        cfg,
        num_frames=num_frames,
        groups_per_context=num_groups,
    )
    return predictions_NxQxD.reshape(batch, num_groups, group_frames, -1)


def predict(
    params: dict, frames_BxTxD: jax.Array, masks: masking.Masks, cfg: ml_collections.ConfigDict
) -> jax.Array:
    """The context path: `frames [B, T, D]` (waveform encoder output) -> projected predictions
    `[B, G, Q, P]` at the target frames. It reads only the context frames: the encoder sees
    them gathered (`masks.context_indices`), never a target frame."""
    with jax.named_scope("context"):
        context_frames_BxKxD = _gather_frames(frames_BxTxD, masks.context_indices)
        context_BxKxD = encoder.apply(
            params["context_encoder"], context_frames_BxKxD, cfg, lengths_B=masks.context_lengths
        )
    with jax.named_scope("predictor"):
        predictions_BxGxQxD = _predict(
            params["predictor"], context_BxKxD, masks, cfg, frames_BxTxD.shape[1]
        )
        return projector.apply(params["projector"], predictions_BxGxQxD, cfg)


def forward(
    params: dict,
    audio_BxS: jax.Array,
    masks: masking.Masks,
    cfg: ml_collections.ConfigDict,
    *,
    lengths_B: jax.Array | None = None,
) -> dict:
    """The training forward pass: everything the objective needs, in the projector's space.

    `audio [B, S]` are normalised crops with `lengths [B]` real samples at the start of each
    (default: all); padding frames are dropped from the masks and from every attention. The
    targets are the model's own projected frames, with their gradients (LeJEPA: no teacher, no
    stop-gradient). Returns a dict of:
      encoder_frames [B, T, D]: the context encoder over all frames, `embed`'s output.
      projected_frames [B, T, P]: projector(encoder(all real frames)), the targets' space.
      frame_valid [B, T]: which frames are real (not padding).
      predictions [B, G, Q, P]: projector(predictor(context)) at each target frame of each group.
      targets [B, G, Q, P]: projected_frames gathered at the target frames.
      target_valid [B, G, Q]: which (group, frame) entries are real.
      context_lengths [B]: real frames of the encoded context.
    """
    with jax.named_scope("waveform"):
        frames_BxTxD = waveform.apply(
            params["waveform_encoder"], audio_BxS, cfg, lengths_B=lengths_B
        )
    batch, num_frames = frames_BxTxD.shape[:2]
    group_frames = masks.target_indices.shape[2]
    if lengths_B is None:
        valid_frames_B = jnp.full((batch,), num_frames, jnp.int32)
    else:
        valid_frames_B = waveform.valid_frames(lengths_B, cfg)
        masks = masking.restrict(masks, valid_frames_B)
    chex.assert_shape(masks.context_indices, (batch, None))

    with jax.named_scope("targets"):
        full_BxTxD = encoder.apply(
            params["context_encoder"], frames_BxTxD, cfg, lengths_B=valid_frames_B
        )
        projected_BxTxP = projector.apply(params["projector"], full_BxTxD, cfg)
        targets_BxGxQxP = at_targets(projected_BxTxP, masks)
    predictions_BxGxQxP = predict(params, frames_BxTxD, masks, cfg)

    chex.assert_equal_shape((predictions_BxGxQxP, targets_BxGxQxP))
    chex.assert_shape(projected_BxTxP, (batch, num_frames, predictions_BxGxQxP.shape[-1]))
    return {
        "encoder_frames": full_BxTxD,
        "projected_frames": projected_BxTxP,
        "frame_valid": jnp.arange(num_frames)[None, :] < valid_frames_B[:, None],
        "predictions": predictions_BxGxQxP,
        "targets": targets_BxGxQxP,
        "target_valid": jnp.arange(group_frames)[None, None, :] < masks.target_lengths[..., None],
        "context_lengths": masks.context_lengths,
    }
