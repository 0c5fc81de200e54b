"""The WavLeJEPA objective: (1 - lambda) * invariance + lambda * SIGReg (+ a clip statistic).

Both terms see one tensor, as in LeJEPA: z = projector(encoder(frames)) of every real frame of
the full crop. The invariance is the squared error between the predictor's projected guess at
each target frame and that frame's z, with gradients into both sides (no teacher, no
stop-gradient). SIGReg is the Epps-Pulley statistic of the rows of `sigreg_samples`: each real
frame's z minus the batch mean at its frame position. With `loss.clip_sigreg_weight` a second
statistic tests the same rows after each also loses its source clip's mean.

The scale rule. The statistic is N times a distance, so its push on the shared weights grows as
lambda * N while the invariance, a mean, does not: the weight that sets the trade-off is
lambda * N. Both statistics therefore test a sample of fixed size, N = loss.sigreg_crops x
loss.sigreg_frames (32 x 50 = 1,600) rows drawn afresh each step: that many crops of the global
batch and that many real frames of each (all of them where the batch is no larger), after the
centring over the whole batch. One lambda then means the same at any batch, crop length and
device count; what grows with the batch is the precision of the means, not SIGReg's weight.

What each shortcut costs. Under SIGReg each direction of z has variance ~1, so predicting the
batch mean already gives invariance ~1: a shortcut gains at most (1 - lambda) of invariance.
Gaussian frames score under 1 in each statistic; a shortcut pays each weight times its excess:
- collapse (z constant): 0.40 * N in both statistics;
- a code of position only (z[b, t] = f(t)): centring by position leaves 0, so 0.40 * N in both;
- a clip constant (z[b, t] = g(b)): its N rows hold only 32 values, so it errs like 32 samples
  times N / 32, ~0.6 * 50, in the first statistic, and scores 0.40 * N in the second.
At lambda = 0.01 and a clip weight of 0.001, against a gain of at most 0.99: collapse and a
position code cost 6.4 + 0.64 = 7.0; a clip constant ~0.3 + 0.64 = 0.9, and a code constant
within each of a packed crop's 2-3 source clips (~10 in the first statistic) 0.1 + 0.64 = 0.74.
Collapse and position codes are priced out; clip codes sit near break-even. Heavier, lambda *
N = 80 (lambda = 0.05) swamps the prediction. Under the rule these prices hold at every shape.

Evidence for each choice, and the forms measured and dropped: docs/experiments.md.
"""

import functools
import operator

import chex
import jax
import jax.numpy as jnp
import ml_collections

from wavlejepa import masking, model, sigreg
from wavlejepa.nets import waveform


def invariance(
    predictions_BxGxQxP: jax.Array, targets_BxGxQxP: jax.Array, valid_BxGxQ: jax.Array
) -> jax.Array:
    """Squared error averaged over the feature axis, then over all valid target frames."""
    diff = predictions_BxGxQxP.astype(jnp.float32) - targets_BxGxQxP.astype(jnp.float32)
    per_frame = jnp.mean(jnp.square(diff), axis=-1)
    valid = valid_BxGxQ.astype(jnp.float32)
    return jnp.sum(per_frame * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def _clip_means(member_BxTxC: jax.Array, x_BxTxP: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(count [B, C], mean [B, C, P])` of x over each clip's member rows (one-hot weights)."""
    count_BxC = jnp.sum(member_BxTxC, axis=1)
    sum_BxCxP = jnp.einsum("btc,btp->bcp", member_BxTxC, x_BxTxP)
    return count_BxC, sum_BxCxP / jnp.maximum(count_BxC, 1.0)[..., None]


def sigreg_samples(
    z_BxTxP: jax.Array,
    valid_BxT: jax.Array,
    clip_ids_BxT: jax.Array | None = None,
    num_clips: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """The rows SIGReg tests: `([B * T, P] float32, weights [B * T])`, each frame's z minus the
    mean of z at its frame position over the crops where that frame is real.

    With `clip_ids [B, T]` (which source clip of its crop each frame belongs to, in
    [0, num_clips), see `waveform.frame_clip_ids`; all 0 for one clip a crop) each row then
    also loses the mean of its clip's rows, scaled by sqrt(k / (k - 1)) for a clip of k real
    frames so that Gaussian frames keep unit variance; a clip of one frame gets weight 0. A clip
    constant is then 0.
    """
    z = z_BxTxP.astype(jnp.float32)
    weight_BxT = valid_BxT.astype(jnp.float32)
    count_T = jnp.maximum(jnp.sum(weight_BxT, axis=0), 1.0)
    mean_TxP = jnp.einsum("btp,bt->tp", z, weight_BxT) / count_T[:, None]
    centred_BxTxP = z - mean_TxP[None]
    if clip_ids_BxT is not None:
        member_BxTxC = jax.nn.one_hot(clip_ids_BxT, num_clips) * weight_BxT[..., None]
        count_BxC, clip_mean_BxCxP = _clip_means(member_BxTxC, centred_BxTxP)
        count_BxT = jnp.einsum("btc,bc->bt", member_BxTxC, count_BxC)
        scale_BxT = jnp.sqrt(count_BxT / jnp.maximum(count_BxT - 1.0, 1.0))
        centred_BxTxP = (
            centred_BxTxP - jnp.einsum("btc,bcp->btp", member_BxTxC, clip_mean_BxCxP)
        ) * scale_BxT[..., None]
        weight_BxT = weight_BxT * (count_BxT > 1.5)
    return centred_BxTxP.reshape(-1, z.shape[-1]), weight_BxT.reshape(-1)


def sample_indices(
    key: jax.Array, valid_BxT: jax.Array, num_crops: int, num_frames: int
) -> jax.Array | None:
    """The scale rule's sample: flat indices `[C * F]` into the `B * T` rows of
    `sigreg_samples`, C = min(B, num_crops) crops drawn without replacement and F = min(T,
    num_frames) of each one's real frames (Gumbel top-k; a crop with fewer real frames fills
    up with padding rows, which weigh 0). None when the batch is no larger: every row counts."""
    batch, frames = valid_BxT.shape
    if batch <= num_crops and frames <= num_frames:
        return None
    k_crops, k_frames = jax.random.split(key)
    crops_C = jnp.arange(batch)
    if batch > num_crops:
        crops_C = jax.random.choice(k_crops, batch, (num_crops,), replace=False)
    frames_CxF = jnp.broadcast_to(jnp.arange(frames), (crops_C.shape[0], frames))
    if frames > num_frames:
        noise_CxT = jax.random.gumbel(k_frames, (crops_C.shape[0], frames))
        scores_CxT = jnp.where(valid_BxT[crops_C], noise_CxT, -jnp.inf)
        _, frames_CxF = jax.lax.top_k(scores_CxT, num_frames)
    return (crops_C[:, None] * frames + frames_CxF).reshape(-1)


def sigreg_statistics(
    z_BxTxP: jax.Array,
    valid_BxT: jax.Array,
    key: jax.Array,
    config: ml_collections.ConfigDict,
    clip_starts_BxC: jax.Array | None,
) -> dict:
    """SIGReg of the projected frames, `{"sigreg": []}`, and with `loss.clip_sigreg_weight` the
    clip-centred rows' statistic `"sigreg_within_clips"` (one clip a crop without clip starts),
    both over the same `sample_indices`."""
    loss = config.loss
    directions = sigreg.random_directions(key, config.model.projector_dim, loss.num_slices)
    picked = sample_indices(
        jax.random.fold_in(key, 1), valid_BxT, loss.sigreg_crops, loss.sigreg_frames
    )

    def stat(rows_NxP, weights_N):
        if picked is not None:
            rows_NxP, weights_N = rows_NxP[picked], weights_N[picked]
        return sigreg.sigreg(rows_NxP, directions, loss.t_max, loss.num_knots, weights_N=weights_N)

    stats = {"sigreg": stat(*sigreg_samples(z_BxTxP, valid_BxT))}
    if loss.clip_sigreg_weight:
        clip_ids_BxT, num_clips = jnp.zeros(valid_BxT.shape, jnp.int32), 1
        if clip_starts_BxC is not None:
            clip_ids_BxT = waveform.frame_clip_ids(
                clip_starts_BxC, valid_BxT.shape[1], config.model
            )
            num_clips = clip_starts_BxC.shape[1]
        rows = sigreg_samples(z_BxTxP, valid_BxT, clip_ids_BxT, num_clips)
        stats["sigreg_within_clips"] = stat(*rows)
    return stats


def weighted_terms(
    out: dict, key: jax.Array, config: ml_collections.ConfigDict, clip_starts_BxC=None
) -> tuple[dict, dict]:
    """The loss's weighted terms of `model.forward`'s outputs, `{"invariance": (1 - lambda) *
    inv, "sigreg": lambda * SIGReg[, "sigreg_within_clips": its weight * statistic]}` (the
    loss is their sum, in this order), and the unweighted terms; `key` draws the slices and
    the sample."""
    inv = invariance(out["predictions"], out["targets"], out["target_valid"])
    stats = sigreg_statistics(
        out["projected_frames"], out["frame_valid"], key, config, clip_starts_BxC
    )
    weight = config.loss.sigreg_weight
    terms = {"invariance": (1.0 - weight) * inv, "sigreg": weight * stats["sigreg"]}
    if config.loss.clip_sigreg_weight:
        terms["sigreg_within_clips"] = config.loss.clip_sigreg_weight * stats["sigreg_within_clips"]
    return terms, {"invariance": inv, **stats}


def objective(
    params: dict,
    audio_BxS: jax.Array,
    key: jax.Array,
    config: ml_collections.ConfigDict,
    *,
    lengths_B: jax.Array | None = None,
    clip_starts_BxC: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Loss of one batch of crops and its metrics; `key` draws the masks and SIGReg slices.

    Args:
      audio_BxS: normalised crops [batch, samples].
      lengths_B: real samples at the start of each crop (the rest is padding); None = all.
      clip_starts_BxC: where source clips begin in each packed crop (the pipeline's
        "clip_starts"; None = one clip a crop), for the clip-centred statistic.
    """
    loss, metrics, _ = objective_and_outputs(
        params, audio_BxS, key, config, lengths_B=lengths_B, clip_starts_BxC=clip_starts_BxC
    )
    return loss, metrics


def objective_and_outputs(
    params: dict,
    audio_BxS: jax.Array,
    key: jax.Array,
    config: ml_collections.ConfigDict,
    *,
    lengths_B: jax.Array | None = None,
    clip_starts_BxC: jax.Array | None = None,
) -> tuple[jax.Array, dict, dict]:
    """`objective`'s (loss, metrics) and the `model.forward` outputs they came from, so an
    evaluation can read the encoder's frames without running the encoder again."""
    k_masks, k_slices = jax.random.split(key)
    batch, num_samples = audio_BxS.shape
    num_frames = waveform.num_frames(num_samples, config.model)
    masks = masking.sample(k_masks, config.masking, batch, num_frames)
    with jax.named_scope("forward"):
        out = model.forward(params, audio_BxS, masks, config.model, lengths_B=lengths_B)
    valid_BxT = out["frame_valid"]
    chex.assert_shape(out["projected_frames"], (batch, num_frames, config.model.projector_dim))

    with jax.named_scope("loss"):
        terms, unweighted = weighted_terms(out, k_slices, config, clip_starts_BxC)
        loss = functools.reduce(operator.add, terms.values())
    metrics = {
        "loss": loss,
        "context_frames": jnp.mean(out["context_lengths"].astype(jnp.float32)),
        "real_frames": jnp.mean(jnp.sum(valid_BxT, axis=1).astype(jnp.float32)),
        "target_frames": jnp.mean(jnp.sum(out["target_valid"], axis=(1, 2)).astype(jnp.float32)),
        **unweighted,
    }
    return loss, metrics, out
