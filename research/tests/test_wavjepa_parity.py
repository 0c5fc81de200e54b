"""research.wavjepa_parity end to end: a reference holding the model's own frames of a real clip
(as research/wavjepa_reference.py writes the official code's) reads as parity on both paths."""

import json
import os

import cli_helpers
import jax
import numpy as np
import soundfile as sf
import test_embed
from scipy import signal

import wavlejepa.data
from configs import cpu_debug
from wavlejepa import model
from wavlejepa.data import transforms


def test_the_models_own_frames_read_as_parity(tmp_path):
    config = cpu_debug.get_config()
    params = model.init(jax.random.key(1), config.model)
    checkpoint = tmp_path / "run"
    test_embed.save_checkpoint(str(checkpoint), config, params)
    audio_8k, rate = sf.read(os.path.join(wavlejepa.data.FSDD_SAMPLE_DIR, "7_theo_3.wav"))
    assert rate == 8000
    raw = signal.resample_poly(audio_8k, 2, 1).astype(np.float32)  # 16 kHz, as the model takes.
    normalised = transforms.normalize(raw)
    frames = np.asarray(model.embed(params, normalised[None], config.model))[0]
    reference = tmp_path / "reference.npz"
    np.savez(reference, audio_raw=raw, audio_normalised=normalised, embeddings=frames)
    out = tmp_path / "parity.json"
    result = cli_helpers.run_module(
        "research.wavjepa_parity", f"--model={checkpoint}", f"--reference={reference}",
        f"--json={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["compared"] == "embeddings" and figures["frames"] == list(frames.shape)
    assert figures["max_abs_reference"] == float(np.abs(frames).max())
    assert figures["max_abs_diff_model_embed"] < 1e-5
    assert figures["max_abs_diff_embedder_raw"] < 1e-4
