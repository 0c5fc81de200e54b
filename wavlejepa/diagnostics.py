r"""How much of the frame embeddings is position, and how much is the clip: a collapse check.

  python -m wavlejepa.diagnostics --checkpoint=/tmp/wavlejepa_quickstart

Frame embeddings e[n, t] of N clips and T frames split their variance into a part that depends
on the frame index only (the per-position mean over clips), a part that depends on the clip only
(the per-clip mean over frames), and the rest. A model that predicts targets from positions
alone drives the position share towards 1: the shortcut this measures.
"""

import glob
import os

import jax
import numpy as np
from absl import app, flags

import wavlejepa.data
from wavlejepa import cli, model, pretrained, runtime
from wavlejepa.data import decode, pcm, pipeline


def variance_shares(embeddings_NxTxD: np.ndarray) -> dict[str, float]:
    """Shares of the total variance explained by frame position and by clip."""
    e = np.asarray(embeddings_NxTxD, np.float64)
    total = e.var(axis=(0, 1)).sum()
    return {
        "position_share": float(e.mean(axis=0).var(axis=0).sum() / total),
        "clip_share": float(e.mean(axis=1).var(axis=0).sum() / total),
    }


def sample_crops(num_clips: int, num_samples: int) -> np.ndarray:
    """The first `num_samples` of bundled FSDD clips at 16 kHz, zero-padded, each normalised
    over its real samples (the padding stays 0)."""
    files = sorted(glob.glob(os.path.join(wavlejepa.data.FSDD_SAMPLE_DIR, "*.wav")))[:num_clips]
    crops = np.zeros((len(files), num_samples), np.float32)
    lengths = np.zeros((len(files),), np.int64)
    for i, path in enumerate(files):
        audio = pcm.int16_to_float(decode.decode_file(path).audio)[:num_samples]
        crops[i, : len(audio)], lengths[i] = audio, len(audio)
    return pipeline.normalize(crops, lengths)


def main(argv):
    del argv
    runtime.set_up()
    params, config = pretrained.load(flags.FLAGS.checkpoint)
    num_samples = pipeline.crop_samples(config.dataset)
    audio = sample_crops(flags.FLAGS.num_clips, num_samples)
    embeddings = jax.jit(lambda p, a: model.embed(p, a, config.model))(params, audio)
    trained = variance_shares(np.asarray(embeddings))
    untrained = variance_shares(
        np.asarray(
            model.embed(model.init(jax.random.PRNGKey(0), config.model), audio, config.model)
        )
    )
    for name in trained:
        print(f"{name:15s} trained {trained[name]:.3f}   random init {untrained[name]:.3f}")


if __name__ == "__main__":
    flags.DEFINE_string("checkpoint", None, "Workdir or checkpoint directory.", required=True)
    flags.DEFINE_integer("num_clips", 120, "Bundled FSDD clips to embed.")
    app.run(main, flags_parser=cli.parse_flags)
