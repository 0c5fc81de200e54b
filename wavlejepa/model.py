"""The whole WavLeJEPA model: params of its four networks, the embedding, the training forward.

waveform encoder: audio [B, S] -> frames [B, T, D] (+ sin-cos positions)
context encoder:  transformer over all T frames (targets, embeddings) or the context frames
predictor:        context -> predictions at the target frames of each group
projector:        encoder/predictor outputs -> SIGReg space, where the loss compares them
                  (training only)
"""

import chex
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


def forward(
    params: dict,
    audio_BxS: jax.Array,
    masks: masking.Masks,
    cfg: ml_collections.ConfigDict,
    *,
    lengths_B: jax.Array | None = None,
    target_blocks: int = 0,
    teacher: dict | None = None,
    clip_starts_BxC: jax.Array | None = None,
    context_audio_BxS: jax.Array | None = None,
) -> dict:
    """The training forward pass, everything the objective needs in SIGReg's (projector) space.

    Args:
      audio_BxS: normalised crops; `lengths [batch]` real samples at the start of each (default:
        all). Padding frames are dropped from the masks and from every attention.
      clip_starts_BxC: where source clips begin in each packed crop (the pipeline's
        "clip_starts"; None = one clip a crop). Every attention then stays inside a clip, and a
        target whose clip holds no context frame is dropped (target_valid False): nothing in
        the context can tell about it.
      context_audio_BxS: the crops as the context hears them (the pipeline's "context_audio":
        the same audio in another voice, frame for frame); None = `audio`. The context frames
        are gathered from its front-end frames, the targets' full pass stays on `audio`.
    Returns a dict of:
      projected_frames [B, T, P]: projector(encoder(all frames)) - the targets' space (same
        params, gradients flow: LeJEPA has no teacher and no stop-gradient).
      frame_valid [B, T]: which frames are real (not padding).
      predictions [B, G, Q, P]: projector(predictor(context)) at each target frame of each group.
      targets [B, G, Q, P]: projected_frames gathered at the target frames.
      target_valid [B, G, Q]: which (group, frame) entries are real.
      context_lengths [B]: valid frames of the encoded context (after dropping padding).
      predictions_encoder [B, G, Q, D]: the predictor's output before the projector.
    With `target_blocks` > 0 also (for loss.targets="wavjepa" and "ema"):
      wavjepa_targets [B, G, Q, D]: the top `target_blocks` blocks' outputs of the full pass,
        each instance-normalised over the real frames, averaged, at the target frames. With
        `teacher` ({"waveform_encoder", "context_encoder"} params, e.g. an EMA of the online
        ones) that full pass is the teacher's instead.
    """
    frames_BxTxD = waveform.apply(params["waveform_encoder"], audio_BxS, cfg, lengths_B=lengths_B)
    batch, num_frames = frames_BxTxD.shape[:2]
    if lengths_B is None:
        valid_frames_B = jnp.full((batch,), num_frames, jnp.int32)
    else:
        valid_frames_B = waveform.valid_frames(lengths_B, cfg)
        masks = masking.restrict(masks, valid_frames_B)
    clip_ids_BxT = None
    if clip_starts_BxC is not None:
        clip_ids_BxT = waveform.frame_clip_ids(clip_starts_BxC, num_frames, cfg)
    context_source_BxTxD = None
    if context_audio_BxS is not None:  # Its shape is checked on the frames.
        context_source_BxTxD = waveform.apply(
            params["waveform_encoder"], context_audio_BxS, cfg, lengths_B=lengths_B
        )
    out = forward_from_frames(
        params,
        frames_BxTxD,
        masks,
        cfg,
        valid_frames_B=valid_frames_B,
        target_blocks=0 if teacher else target_blocks,
        clip_ids_BxT=clip_ids_BxT,
        context_frames_BxTxD=context_source_BxTxD,
    )
    if teacher and target_blocks:
        out["wavjepa_targets"] = _teacher_targets(
            teacher, audio_BxS, masks, cfg, lengths_B, valid_frames_B, clip_ids_BxT, target_blocks
        )
    return out


def _teacher_targets(
    teacher: dict,
    audio_BxS: jax.Array,
    masks: masking.Masks,
    cfg: ml_collections.ConfigDict,
    lengths_B: jax.Array | None,
    valid_frames_B: jax.Array,
    clip_ids_BxT: jax.Array | None,
    target_blocks: int,
) -> jax.Array:
    """WavJEPA's targets from the teacher's full pass, at the target frames: [B, G, Q, D]."""
    with jax.named_scope("teacher"):
        frames_BxTxD = waveform.apply(
            teacher["waveform_encoder"], audio_BxS, cfg, lengths_B=lengths_B
        )
        _, targets_BxTxD = encoder.apply(
            teacher["context_encoder"],
            frames_BxTxD,
            cfg,
            lengths_B=valid_frames_B,
            clip_ids_BxT=clip_ids_BxT,
            top_blocks=target_blocks,
        )
        return at_targets(targets_BxTxD, masks)


def _clip_masks(clip_ids_BxT: jax.Array, masks: masking.Masks) -> tuple[jax.Array, jax.Array, dict]:
    """For packed crops: `(context clip ids [B, K], has_context [B, G, Q], predictor kwargs)`.

    A target frame has context when some valid context frame comes from its source clip; the
    predictor's kwargs keep its attention inside a clip, per group folded into the batch.
    """
    batch, num_groups, group_frames = masks.target_indices.shape
    context_ids_BxK = jnp.take_along_axis(clip_ids_BxT, masks.context_indices, axis=1)
    target_ids_BxGxQ = jnp.take_along_axis(
        clip_ids_BxT, masks.target_indices.reshape(batch, -1), axis=1
    ).reshape(batch, num_groups, group_frames)
    context_valid_BxK = (
        jnp.arange(context_ids_BxK.shape[1])[None, :] < masks.context_lengths[:, None]
    )
    same_clip_BxGxQxK = target_ids_BxGxQ[..., None] == context_ids_BxK[:, None, None, :]
    has_context_BxGxQ = jnp.any(same_clip_BxGxQxK & context_valid_BxK[:, None, None, :], -1)
    predictor_kwargs = {
        "target_clip_ids_BxQ": target_ids_BxGxQ.reshape(batch * num_groups, group_frames),
        "context_clip_ids_BxK": jnp.repeat(context_ids_BxK, num_groups, axis=0),
    }
    return context_ids_BxK, has_context_BxGxQ, predictor_kwargs


def _predict(
    predictor_params: dict,
    context_BxKxD: jax.Array,
    masks: masking.Masks,
    cfg: ml_collections.ConfigDict,
    num_frames: int,
    clip_masks: dict,
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
        **clip_masks,
    )
    return predictions_NxQxD.reshape(batch, num_groups, group_frames, -1)


def _full_pass(
    params: dict,
    frames_BxTxD: jax.Array,
    masks: masking.Masks,
    cfg: ml_collections.ConfigDict,
    valid_frames_B: jax.Array | None,
    clip_ids_BxT: jax.Array | None,
    target_blocks: int,
) -> tuple[jax.Array, dict]:
    """The encoder over every real frame, projected: `([B, T, P], extra)`; with target_blocks,
    extra holds WavJEPA's targets at the target frames ([B, G, Q, D])."""
    full_BxTxD = encoder.apply(
        params["context_encoder"],
        frames_BxTxD,
        cfg,
        lengths_B=valid_frames_B,
        clip_ids_BxT=clip_ids_BxT,
        top_blocks=target_blocks,
    )
    extra = {}
    if target_blocks:
        full_BxTxD, wavjepa_BxTxD = full_BxTxD
        extra["wavjepa_targets"] = at_targets(wavjepa_BxTxD, masks)
    return projector.apply(params["projector"], full_BxTxD, cfg), extra


def forward_from_frames(
    params: dict,
    frames_BxTxD: jax.Array,
    masks: masking.Masks,
    cfg: ml_collections.ConfigDict,
    *,
    valid_frames_B: jax.Array | None = None,
    target_blocks: int = 0,
    clip_ids_BxT: jax.Array | None = None,
    context_frames_BxTxD: jax.Array | None = None,
) -> dict:
    """`forward` after the waveform encoder (`frames [B, T, D]` with positions); masks must
    already exclude frames past `valid_frames [B]` (`masking.restrict`). `clip_ids [B, T]`
    (`waveform.frame_clip_ids`) keeps every attention inside a source clip. The context is
    gathered from `context_frames [B, T, D]` when given (the context's own view), else from
    `frames`."""
    batch, num_groups, group_frames = masks.target_indices.shape
    num_frames = frames_BxTxD.shape[1]
    chex.assert_shape(masks.context_indices, (batch, None))

    with jax.named_scope("targets"):
        projected_BxTxP, extra = _full_pass(
            params, frames_BxTxD, masks, cfg, valid_frames_B, clip_ids_BxT, target_blocks
        )
        targets_BxGxQxP = at_targets(projected_BxTxP, masks)

    target_valid_BxGxQ = jnp.arange(group_frames)[None, None, :] < masks.target_lengths[..., None]
    clip_masks, context_ids_BxK = {}, None
    if clip_ids_BxT is not None:
        context_ids_BxK, has_context_BxGxQ, clip_masks = _clip_masks(clip_ids_BxT, masks)
        target_valid_BxGxQ = target_valid_BxGxQ & has_context_BxGxQ

    with jax.named_scope("context"):
        if context_frames_BxTxD is None:
            context_frames_BxTxD = frames_BxTxD
        chex.assert_equal_shape((context_frames_BxTxD, frames_BxTxD))
        context_frames_BxKxD = _gather_frames(context_frames_BxTxD, masks.context_indices)
        context_BxKxD = encoder.apply(
            params["context_encoder"],
            context_frames_BxKxD,
            cfg,
            lengths_B=masks.context_lengths,
            clip_ids_BxT=context_ids_BxK,
        )

    with jax.named_scope("predictor"):
        predictions_BxGxQxD = _predict(
            params["predictor"], context_BxKxD, masks, cfg, num_frames, clip_masks
        )
        predictions_BxGxQxP = projector.apply(params["projector"], predictions_BxGxQxD, cfg)
        extra["predictions_encoder"] = predictions_BxGxQxD

    if valid_frames_B is None:
        valid_frames_B = jnp.full((batch,), num_frames, jnp.int32)
    chex.assert_equal_shape((predictions_BxGxQxP, targets_BxGxQxP))
    chex.assert_shape(projected_BxTxP, (batch, num_frames, predictions_BxGxQxP.shape[-1]))
    chex.assert_shape(target_valid_BxGxQ, (batch, num_groups, group_frames))
    return {
        "projected_frames": projected_BxTxP,
        "frame_valid": jnp.arange(num_frames)[None, :] < valid_frames_B[:, None],
        "predictions": predictions_BxGxQxP,
        "targets": targets_BxGxQxP,
        "target_valid": target_valid_BxGxQ,
        "context_lengths": masks.context_lengths,
        **extra,
    }
