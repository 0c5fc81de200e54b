r"""How much of the frame embeddings is position, how much is the clip, and how many directions
they use: collapse checks.

  python -m wavlejepa.diagnostics --checkpoint=/tmp/wavlejepa_quickstart

Frame embeddings e[n, t] of N clips and T frames split their variance into a part that depends
on the frame index only (the per-position mean over clips), a part that depends on the clip only
(the per-clip mean over frames), and the rest. A model that predicts targets from positions
alone drives the position share towards 1: the shortcut this measures. The effective rank
(Roy & Vetterli 2007) counts the directions the frames spread over: it falls as they collapse.
"""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

import wavlejepa.data
from wavlejepa import cli, flag_kinds, model, pretrained, runtime
from wavlejepa.data import decode, fsdd, pcm, pipeline

# The bundled FSDD clips --num_clips draws from (300).
NUM_SAMPLE_CLIPS = len(glob.glob(os.path.join(wavlejepa.data.FSDD_SAMPLE_DIR, "*.wav")))


def variance_shares(embeddings_NxTxD: np.ndarray) -> dict[str, float]:
    """Shares of the total variance explained by frame position and by clip (nan, with a
    warning, when every frame embedding is the same: there is no variance to share)."""
    e = np.asarray(embeddings_NxTxD, np.float64)
    total = e.var(axis=(0, 1)).sum()
    if not total > 0:
        logging.warning(
            "Every frame embedding of the %d clips is the same (a collapsed model): position "
            "and clip shares are undefined (nan).",
            e.shape[0],
        )
        return {"position_share": float("nan"), "clip_share": float("nan")}
    return {
        "position_share": float(e.mean(axis=0).var(axis=0).sum() / total),
        "clip_share": float(e.mean(axis=1).var(axis=0).sum() / total),
    }


def effective_rank(x_NxD: jax.Array, weights_N: jax.Array | None = None) -> jax.Array:
    """exp of the Shannon entropy of the covariance's eigenvalues, normalised to sum 1: a float32
    scalar in [1, D] (Roy & Vetterli 2007).

    `x [rows, dim]`: one row per sample (e.g. every frame of a batch); `weights [rows]` (default
    all 1) weight each row in the mean and the covariance, so rows of weight 0 (padding) are
    ignored. Isotropic data of D dims reads ~D, data on one line reads 1 (as does a constant).
    """
    x = x_NxD.astype(jnp.float32)
    w_N = jnp.ones(x.shape[:1], jnp.float32) if weights_N is None else weights_N
    w_N = w_N.astype(jnp.float32) / jnp.maximum(jnp.sum(w_N), 1e-12)
    highest = jax.lax.Precision.HIGHEST  # TPUs otherwise multiply float32 in bfloat16.
    centred_NxD = x - jnp.einsum("n,nd->d", w_N, x, precision=highest)
    cov_DxD = jnp.einsum("n,nd,ne->de", w_N, centred_NxD, centred_NxD, precision=highest)
    eigenvalues_D = jnp.maximum(jnp.linalg.eigvalsh(cov_DxD), 0.0)  # Rounding goes below 0.
    p_D = eigenvalues_D / jnp.maximum(jnp.sum(eigenvalues_D), jnp.finfo(jnp.float32).tiny)
    entropy = -jnp.sum(jnp.where(p_D > 0, p_D * jnp.log(jnp.where(p_D > 0, p_D, 1.0)), 0.0))
    return jnp.exp(entropy)


def collapse_checks(embeddings_NxTxD: np.ndarray) -> dict[str, float]:
    """`variance_shares` and the `effective_rank` of all N * T frames."""
    rank = effective_rank(embeddings_NxTxD.reshape(-1, embeddings_NxTxD.shape[-1]))
    return {**variance_shares(embeddings_NxTxD), "effective_rank": float(rank)}


def sample_crops(num_clips: int, num_samples: int) -> np.ndarray:
    """The first `num_samples` of bundled FSDD clips at 16 kHz, zero-padded, each normalised
    over its real samples (the padding stays 0)."""
    files = sorted(glob.glob(os.path.join(wavlejepa.data.FSDD_SAMPLE_DIR, "*.wav")))[:num_clips]
    speakers = {fsdd.parse_name(path)[1] for path in files}
    if len(speakers) == 1:
        logging.warning(
            "The first %d bundled clips (in file-name order: digit, speaker, take) are all "
            "%s's takes of one digit: clip_share compares those alone; a larger --num_clips "
            "spans more speakers and digits.",
            len(files),
            speakers.pop(),
        )
    crops = np.zeros((len(files), num_samples), np.float32)
    lengths = np.zeros((len(files),), np.int64)
    for i, path in enumerate(files):
        audio = pcm.int16_to_float(decode.decode_file(path).audio)[:num_samples]
        crops[i, : len(audio)], lengths[i] = audio, len(audio)
    return pipeline.normalize(crops, lengths)


def main(argv):
    del argv
    runtime.set_up()
    try:
        params, config = pretrained.load(flags.FLAGS.checkpoint)
    except pretrained.CheckpointError as e:
        cli.fail(str(e))
    num_samples = pipeline.crop_samples(config.dataset)
    audio = sample_crops(flags.FLAGS.num_clips, num_samples)
    embeddings = jax.jit(lambda p, a: model.embed(p, a, config.model))(params, audio)
    untrained = model.embed(model.init(jax.random.PRNGKey(0), config.model), audio, config.model)
    trained, untrained = (collapse_checks(np.asarray(e)) for e in (embeddings, untrained))
    for name in trained:
        print(f"{name:15s} trained {trained[name]:.3f}   random init {untrained[name]:.3f}")


def _define_flags() -> None:
    """CLI flags, defined only when run as a program."""
    flag_kinds.define_input(
        "checkpoint", None, "Workdir or checkpoint directory.", kind="folder", required=True
    )
    # One clip's frames vary by position only (position share 1 whatever the model): >= 2.
    flag_kinds.define_number(
        "num_clips", 120, "Bundled FSDD clips to embed.", low=2, high=NUM_SAMPLE_CLIPS, unit="clips"
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
