"""Context/target masks for one batch of crops (WavJEPA's block masking), static-shaped under jit.

Per crop: `num_target_groups` groups, each of `spans_per_target_group` non-overlapping spans of
`span_frames` frames (groups are drawn independently and may overlap each other); the context is
every frame in no target span and no context-drop span. Masks are redrawn until the context holds
at least `min_context_fraction` of the frames; after `max_redraws` failed draws the crop falls
back to its first target group alone with no drop spans (which always satisfies the minimum,
checked by `validate`). Frames are returned as fixed-size index arrays, valid entries first,
plus lengths.
"""

import math

import chex
import jax
import jax.numpy as jnp
import ml_collections


@chex.dataclass(frozen=True)
class Masks:
    """Frame indices of one batch; entries past the lengths are padding (index 0)."""

    context_indices: jax.Array  # [batch, context_capacity] int32, ascending, valid first.
    context_lengths: jax.Array  # [batch] int32.
    target_indices: jax.Array  # [batch, groups, spans * span_frames] int32, ascending.
    target_lengths: jax.Array  # [batch, groups] int32: full, or 0 for a dropped group.


def min_context_frames(cfg: ml_collections.ConfigDict, num_frames: int) -> int:
    return max(1, math.ceil(cfg.min_context_fraction * num_frames))


def context_capacity(cfg: ml_collections.ConfigDict, num_frames: int) -> int:
    """Static size of the gathered context (larger contexts keep a random subset)."""
    capacity = max(min_context_frames(cfg, num_frames), int(cfg.max_context_fraction * num_frames))
    return min(capacity, num_frames)


def validate(cfg: ml_collections.ConfigDict, num_frames: int) -> None:
    """Raises ValueError, naming the config key, if masks cannot be drawn for `num_frames`."""
    group_frames = cfg.spans_per_target_group * cfg.span_frames
    if min(cfg.span_frames, cfg.spans_per_target_group, cfg.num_target_groups) < 1:
        raise ValueError(
            "config.masking.{span_frames, spans_per_target_group, num_target_groups} must be >= 1."
        )
    if cfg.num_context_drop_spans < 0 or cfg.max_redraws < 1:
        raise ValueError("config.masking.num_context_drop_spans >= 0 and max_redraws >= 1 needed.")
    if not 0.0 < cfg.min_context_fraction <= cfg.max_context_fraction <= 1.0:
        raise ValueError(
            "Need 0 < config.masking.min_context_fraction <= max_context_fraction <= 1, got "
            f"{cfg.min_context_fraction} and {cfg.max_context_fraction}."
        )
    if num_frames - group_frames < min_context_frames(cfg, num_frames):
        raise ValueError(
            f"A crop of {num_frames} frames cannot hold a target group of {group_frames} frames "
            f"and a context of min_context_fraction={cfg.min_context_fraction}: use longer crops "
            "(config.dataset.crop_seconds) or fewer/shorter spans (config.masking)."
        )


def _non_overlapping_spans(key: jax.Array, num_frames: int, num_spans: int, span: int):
    """`[num_spans * span]` ascending frames of non-overlapping spans, uniform over layouts.

    Stars and bars: choosing num_spans distinct slots among num_frames - num_spans*(span-1)
    and shifting the i-th by i*(span-1) gives every non-overlapping layout equal probability.
    """
    num_slots = num_frames - num_spans * (span - 1)
    slots = jnp.sort(jax.random.choice(key, num_slots, (num_spans,), replace=False))
    starts = slots + jnp.arange(num_spans) * (span - 1)
    return (starts[:, None] + jnp.arange(span)[None, :]).reshape(-1)


def _draw(key: jax.Array, cfg: ml_collections.ConfigDict, num_frames: int):
    """One draw for one crop: targets `[groups, group_frames]` and a context mask `[frames]`."""
    k_targets, k_drop = jax.random.split(key)
    targets_GxQ = jax.vmap(
        lambda k: _non_overlapping_spans(k, num_frames, cfg.spans_per_target_group, cfg.span_frames)
    )(jax.random.split(k_targets, cfg.num_target_groups))
    covered = jnp.zeros((num_frames,), bool).at[targets_GxQ.reshape(-1)].set(True)
    drop_starts = jax.random.randint(
        k_drop, (cfg.num_context_drop_spans,), 0, num_frames - cfg.span_frames + 1
    )
    drop_frames = (drop_starts[:, None] + jnp.arange(cfg.span_frames)[None, :]).reshape(-1)
    covered = covered.at[drop_frames].set(True)
    return targets_GxQ, ~covered


def _sample_one(key: jax.Array, cfg: ml_collections.ConfigDict, num_frames: int):
    min_frames = min_context_frames(cfg, num_frames)
    k_draws, k_subset = jax.random.split(key)

    def cond(state):
        tries, _, context, _ = state
        return (jnp.sum(context) < min_frames) & (tries < cfg.max_redraws)

    def body(state):
        tries = state[0]
        targets, context = _draw(jax.random.fold_in(k_draws, tries), cfg, num_frames)
        return tries + 1, targets, context, tries

    targets, context = _draw(jax.random.fold_in(k_draws, 0), cfg, num_frames)
    _, targets, context, _ = jax.lax.while_loop(cond, body, (1, targets, context, 0))

    # Fallback after max_redraws: keep only the first group and no drop spans.
    ok = jnp.sum(context) >= min_frames
    group_frames = targets.shape[1]
    fallback_context = jnp.ones((num_frames,), bool).at[targets[0]].set(False)
    context = jnp.where(ok, context, fallback_context)
    target_lengths = jnp.where(
        ok | (jnp.arange(cfg.num_target_groups) == 0), group_frames, 0
    ).astype(jnp.int32)

    # Gather up to `capacity` context frames: a random subset when there are more, then sorted
    # by time with the valid ones first.
    capacity = context_capacity(cfg, num_frames)
    score = jnp.where(context, jax.random.uniform(k_subset, (num_frames,)), 2.0)
    kept = jnp.argsort(score)[:capacity]
    kept_valid = context[kept]
    order = jnp.argsort(jnp.where(kept_valid, kept, num_frames + kept))
    context_indices = jnp.where(kept_valid[order], kept[order], 0).astype(jnp.int32)
    context_length = jnp.minimum(jnp.sum(context), capacity).astype(jnp.int32)
    return context_indices, context_length, targets.astype(jnp.int32), target_lengths


def sample(key: jax.Array, cfg: ml_collections.ConfigDict, batch: int, num_frames: int) -> Masks:
    """Draws the masks of `batch` crops of `num_frames` frames; deterministic for a key."""
    ctx_idx, ctx_len, tgt_idx, tgt_len = jax.vmap(lambda k: _sample_one(k, cfg, num_frames))(
        jax.random.split(key, batch)
    )
    return Masks(
        context_indices=ctx_idx,
        context_lengths=ctx_len,
        target_indices=tgt_idx,
        target_lengths=tgt_len,
    )


def restrict(masks: Masks, valid_frames_B: jax.Array) -> Masks:
    """The masks without any frame at or past `valid_frames[b]` (padding at the end of a crop).

    Context and target indices are ascending with the valid entries first, so the frames that
    survive are a prefix: only the lengths change. A crop left with no context keeps frame 0
    (a real frame: `valid_frames >= 1`), so attention always has a key; targets may be emptied.
    """
    valid_B1 = valid_frames_B[:, None]
    capacity = masks.context_indices.shape[1]
    in_context_BxK = (jnp.arange(capacity)[None, :] < masks.context_lengths[:, None]) & (
        masks.context_indices < valid_B1
    )
    context_lengths = jnp.sum(in_context_BxK, axis=1).astype(jnp.int32)
    context_indices = jnp.where(
        (context_lengths == 0)[:, None], jnp.zeros_like(masks.context_indices),
        masks.context_indices,
    )  # fmt: skip
    group_frames = masks.target_indices.shape[2]
    listed_BxGxQ = jnp.arange(group_frames)[None, None, :] < masks.target_lengths[..., None]
    in_target_BxGxQ = listed_BxGxQ & (masks.target_indices < valid_B1[:, :, None])
    return Masks(
        context_indices=context_indices,
        context_lengths=jnp.maximum(context_lengths, 1),
        target_indices=masks.target_indices,
        target_lengths=jnp.sum(in_target_BxGxQ, axis=2).astype(jnp.int32),
    )
