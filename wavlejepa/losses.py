"""The WavLeJEPA objective: (1 - lambda) * invariance + lambda * SIGReg, both in projector space.

Both terms see the same tensor, as in LeJEPA: z = projector(encoder(frames)) of every real frame
of the full crop. The invariance is the squared error between the predictor's (projected) guess
at each target frame and that frame's z; SIGReg is the Epps-Pulley statistic of z. No teacher,
no stop-gradient: the targets' gradients flow into the encoder.

What SIGReg sees (`sigreg_samples`): the z of every real frame of every crop in the global batch,
each centred by the batch mean at its frame position, pooled into ONE statistic of
N = B * T_real rows (padding rows weigh 0). Why this form, shortcut by shortcut:

- A code of position only (z[b, t] = f(t)): centring by position makes it exactly 0, a
  collapsed sample: the statistic is about 0.40 * N.
- A clip constant (z[b, t] = g(b)): the N rows hold only B distinct values, so the empirical
  characteristic function errs like that of B samples, not N: the statistic is about
  N / B * E[EP of B Gaussian samples] = 1.05 * T.
- A collapsed code (z constant): 0.40 * N, like the position code.
- Frames that vary within and across clips, Gaussian in every direction: about 1 (more by the
  frames' correlation in time, a few frames for speech).

The scale. Under SIGReg each direction of z has variance ~1, so predicting the batch mean
already gives invariance ~1: a shortcut can gain at most (1 - lambda) * 1 of invariance. It
must pay lambda * (its statistic - ~1). With lambda = 0.05 the collapse and position-code price
is 0.02 * N (32 for the quickstart's 32 crops x 50 frames, 2,048 for 512 x 200) and the
clip-constant price is ~0.05 * T (2.6 at T = 50, 10 at T = 200): each above the gain of 0.95, so
no shortcut pays when T >= 20 real frames a crop. The earlier forms failed this test: SIGReg on
one pooled embedding per crop at N = 32 prices collapse at 0.05 * 0.4 * 32 = 0.64 < 0.95, and
pooling frames without centring lets a position code count as spread.

The other side of the scale: the statistic's weight in the loss grows with N too, and at
lambda * N = 80 (lambda = 0.05, N = 1,600) it swamped the prediction on FSDD. The quickstart
therefore uses lambda = 0.01 (configs/quickstart.py): collapse and a position code still cost
6.4, a clip constant only ~0.5 at T = 50. Over 300 steps the clip share stayed at 0.04-0.05;
over 1,500 steps it grew to 0.2-0.27 and the probes fell below random init (README, "Does
training learn?"): this price is too low for long runs.

Packed crops make the clip constant cheaper still: a code constant within each of a crop's
2-3 source clips scores ~9 at N = 1,600 (a price of ~0.09 at lambda = 0.01). Pricing it as
collapse (`loss.clip_sigreg_weight`: a second statistic over rows that also lose their source
clip's mean) at weight 0.003 held the clip share at 0.01-0.04 over 750 steps but did not make
the unseen speaker better (README, session 6). At 0.001 (a clip constant priced at
0.001 * 0.4 * N = 0.64 at N = 1,600) the clip share still grows, to 0.13 against 0.17-0.20
without it, and over seeds 0 and 1 digits and the unseen speaker end higher than without it
(README, session 8): the quickstart's weight. The base recipe leaves it off (unmeasured there).

WavJEPA's target normalisation without its teacher (`loss.target_norm="clip"`, off by default):
the invariance compares the predictions with z normalised over time within each source clip
(`normalise_within_clips`), so a clip constant earns no invariance at all; SIGReg is unchanged.
It has a price of its own: a code constant within a clip normalises to 0 and is then perfectly
predicted, so only SIGReg (a clip constant at ~0.5, or 0.64 with the second statistic) stands
against it. Over 750 steps (seed 0) the invariance fell to 0.07 (0.59 without it) and the clip
share stayed at 0.03, but the unseen speaker ended below random init (README, session 12).

Forms measured and dropped (README table; the code is at commit 584cf3a): one statistic per
frame position over the crops (LeJEPA's per-view form, N = B: a clip constant passes it),
uncentred frames (a position code passes), and targets minus their crop's mean; and (at commit
e65aa08, `loss.sigreg_centre_clips`) the clip-centred rows in place of the position-centred
ones: a flat learning curve.
"""

import chex
import jax
import jax.numpy as jnp
import ml_collections

from wavlejepa import masking, model, sigreg
from wavlejepa.nets import waveform

TARGETS = ("online", "stop_gradient", "wavjepa", "ema")
TARGET_NORMS = ("none", "clip")


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


def normalise_within_clips(
    z_BxTxP: jax.Array,
    valid_BxT: jax.Array,
    clip_ids_BxT: jax.Array,
    num_clips: int,
    eps: float = 1e-5,
) -> jax.Array:
    """Each channel of z normalised over the real frames of its source clip: [B, T, P] float32,
    (z - mean) / sqrt(var + eps) with the clip's mean and (biased) variance, WavJEPA's instance
    norm over time taken per source clip of a packed crop; padding frames are 0.

    As invariance targets (`loss.target_norm="clip"`) they hold only what changes inside a clip:
    a clip constant (speaker, channel, loudness) is 0 there and earns no invariance, and no
    scale of z is easier to predict than another.
    """
    z = z_BxTxP.astype(jnp.float32)
    valid = valid_BxT.astype(jnp.float32)
    member_BxTxC = jax.nn.one_hot(clip_ids_BxT, num_clips) * valid[..., None]
    _, mean_BxCxP = _clip_means(member_BxTxC, z)
    centred_BxTxP = (z - jnp.einsum("btc,bcp->btp", member_BxTxC, mean_BxCxP)) * valid[..., None]
    _, var_BxCxP = _clip_means(member_BxTxC, jnp.square(centred_BxTxP))
    var_BxTxP = jnp.einsum("btc,bcp->btp", member_BxTxC, var_BxCxP)
    return centred_BxTxP * jax.lax.rsqrt(var_BxTxP + eps)


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


def _compared(out: dict, targets_option: str) -> tuple[jax.Array, jax.Array]:
    """What the invariance compares, `(predictions, targets)` [B, G, Q, *], by loss.targets."""
    if targets_option == "online":  # LeJEPA: the targets carry gradients.
        return out["predictions"], out["targets"]
    if targets_option == "stop_gradient":  # The invariance does not move the targets.
        return out["predictions"], jax.lax.stop_gradient(out["targets"])
    if targets_option in ("wavjepa", "ema"):
        # WavJEPA's targets under stop-gradient: online encoder, or its EMA teacher.
        return out["predictions_encoder"], jax.lax.stop_gradient(out["wavjepa_targets"])
    raise ValueError(f"config.loss.targets={targets_option!r}; choose one of {TARGETS}.")


def objective(
    params: dict,
    audio_BxS: jax.Array,
    key: jax.Array,
    config: ml_collections.ConfigDict,
    *,
    lengths_B: jax.Array | None = None,
    teacher: dict | None = None,
    clip_starts_BxC: jax.Array | None = None,
    context_audio_BxS: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Loss of one batch of crops and its metrics; `key` draws the masks and SIGReg slices.

    Args:
      audio_BxS: normalised crops [batch, samples].
      lengths_B: real samples at the start of each crop (the rest is padding); None = all.
      teacher: the EMA teacher's encoder params (`train_state.TrainState.teacher`), used when
        `config.loss.targets == "ema"`.
      clip_starts_BxC: where source clips begin in each packed crop (the pipeline's
        "clip_starts"); with `config.model.attend_within_clips` attention stays inside a clip.
      context_audio_BxS: the crops in the context's voice (the pipeline's "context_audio",
        `config.dataset.context_pitch_shift`); None = the context hears `audio_BxS`.
    """
    k_masks, k_slices = jax.random.split(key)
    batch, num_samples = audio_BxS.shape
    num_frames = waveform.num_frames(num_samples, config.model)
    masks = masking.sample(k_masks, config.masking, batch, num_frames)
    wavjepa = config.loss.targets in ("wavjepa", "ema")
    if config.loss.targets == "ema" and not teacher:
        raise ValueError('config.loss.targets="ema" needs the train state\'s teacher params.')
    target_blocks = min(config.loss.target_blocks, config.model.encoder_depth) if wavjepa else 0
    out = model.forward(
        params,
        audio_BxS,
        masks,
        config.model,
        lengths_B=lengths_B,
        target_blocks=target_blocks,
        teacher=teacher if config.loss.targets == "ema" else None,
        clip_starts_BxC=clip_starts_BxC if config.model.attend_within_clips else None,
        context_audio_BxS=context_audio_BxS,
    )
    chex.assert_shape(out["projected_frames"], (batch, num_frames, config.model.projector_dim))

    clip_ids_BxT, num_clips = jnp.zeros((batch, num_frames), jnp.int32), 1
    if clip_starts_BxC is not None:
        clip_ids_BxT = waveform.frame_clip_ids(clip_starts_BxC, num_frames, config.model)
        num_clips = clip_starts_BxC.shape[1]
    if config.loss.target_norm not in TARGET_NORMS:
        raise ValueError(
            f"config.loss.target_norm={config.loss.target_norm!r}; choose one of {TARGET_NORMS}."
        )
    if config.loss.target_norm == "clip":  # Targets: z normalised over time within each clip.
        normalised_BxTxP = normalise_within_clips(
            out["projected_frames"], out["frame_valid"], clip_ids_BxT, num_clips
        )
        out = {**out, "targets": model.at_targets(normalised_BxTxP, masks)}
    predictions, targets = _compared(out, config.loss.targets)
    inv = invariance(predictions, targets, out["target_valid"])
    directions = sigreg.random_directions(
        k_slices, config.model.projector_dim, config.loss.num_slices
    )
    frames = (out["projected_frames"], out["frame_valid"])
    stat = lambda rows_NxP, weights_N: sigreg.sigreg(
        rows_NxP, directions, config.loss.t_max, config.loss.num_knots, weights_N=weights_N
    )
    reg = stat(*sigreg_samples(*frames))
    weight = config.loss.sigreg_weight
    loss = (1.0 - weight) * inv + weight * reg
    extra = {}
    if config.loss.clip_sigreg_weight:  # A second statistic, of the clip-centred rows.
        extra["sigreg_within_clips"] = stat(*sigreg_samples(*frames, clip_ids_BxT, num_clips))
        loss = loss + config.loss.clip_sigreg_weight * extra["sigreg_within_clips"]
    metrics = {
        "loss": loss,
        "invariance": inv,
        "sigreg": reg,
        "context_frames": jnp.mean(out["context_lengths"].astype(jnp.float32)),
        "real_frames": jnp.mean(jnp.sum(out["frame_valid"], axis=1).astype(jnp.float32)),
        "target_frames": jnp.mean(jnp.sum(out["target_valid"], axis=(1, 2)).astype(jnp.float32)),
        **extra,
    }
    return loss, metrics
