"""research/dominant_direction.py: its shares against independent computations (least squares on
indicators or a line, the SVD), the per-frame properties against a clip of known loudness, and
one analysis of real FSDD clips through the tiny model."""

import chex
import jax
import numpy as np

from configs import cpu_debug
from research import dominant_direction as dd
from research import learning
from wavlejepa import train_state
from wavlejepa.data import fsdd
from wavlejepa.evaluators import linear_probe


def _least_squares_share(y: np.ndarray, design: np.ndarray) -> float:
    """1 - residual / total sum of squares of y fitted on `design`'s columns."""
    fit, *_ = np.linalg.lstsq(design, y, rcond=None)
    return 1 - np.square(y - design @ fit).sum() / np.square(y - y.mean()).sum()


def test_eta_squared_is_the_fit_on_group_indicators():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 5, 400)
    scores = np.array([1.0, -2.0, 0.5, 3.0, 0.0])[groups] + rng.normal(size=400)
    want = _least_squares_share(scores, np.eye(5)[groups])
    np.testing.assert_allclose(dd.eta_squared(scores, groups), want, rtol=1e-10)
    assert dd.eta_squared(groups * 1.0, groups) == 1.0
    assert np.isnan(dd.eta_squared(np.ones(10), np.arange(10) % 2))


def test_r_squared_is_the_fit_on_a_line():
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    scores = 2 * x + rng.normal(size=300)
    want = _least_squares_share(scores, np.stack([np.ones_like(x), x], axis=1))
    np.testing.assert_allclose(dd.r_squared(scores, x), want, rtol=1e-10)
    np.testing.assert_allclose(dd.r_squared(-3 * x + 7, x), 1.0)


def test_principal_directions_match_the_svd():
    rng = np.random.default_rng(2)
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    x = (rng.normal(size=(500, 4)) * [3.0, 2.0, 1.0, 0.5]) @ rotation.T + 10.0
    shares, scores = dd.principal(x, 2)
    singular = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    chex.assert_shape(scores, (500, 2))
    np.testing.assert_allclose(shares, np.square(singular[:2]) / np.square(singular).sum())
    np.testing.assert_allclose(scores.var(axis=0, ddof=1), np.square(singular[:2]) / 499)
    assert 0.6 < shares[0] < 0.7  # 9 / 14.25 of the variance, up to sampling.


def test_frame_properties_of_a_clip_of_known_loudness():
    cfg = cpu_debug.get_config().model
    clip = np.full(4_000, 0.1, np.float32)
    clip[2_000:] = 0.01  # -20 dB, then -40 dB.
    frames = [np.zeros((5, 3)), np.zeros((2, 3))]
    props = dd.frame_properties([clip, clip], frames, np.array([3, 7]), cfg)
    np.testing.assert_array_equal(props["clip"], [0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(props["speaker"], [3, 3, 3, 3, 3, 7, 7])
    np.testing.assert_allclose(props["position"], [0, 0.25, 0.5, 0.75, 1, 0, 1])
    np.testing.assert_allclose(props["loudness"][:2], [-20.0, -20.0], atol=1e-4)
    # Frames 0-4 see samples [160 t, 160 t + 240): loud through frame 10, so all of clip 0.
    np.testing.assert_array_equal(props["speech"], [True] * 7)
    silent = dd.frame_properties([np.zeros(4_000, np.float32)], frames[:1], np.array([0]), cfg)
    np.testing.assert_allclose(silent["loudness"], -100.0)


def test_a_real_analysis_through_the_tiny_model():
    config = cpu_debug.get_config()
    data = learning.subsample(fsdd.load_fsdd(fsdd.SAMPLE_DIR), 20)
    params = train_state.create(jax.random.PRNGKey(0), config=config).params
    frames_fn = linear_probe.model_frames(params, config, 8)
    frames = {s: frames_fn(data[s]["audio"]) for s in learning.SPLITS}
    props = dd.all_clip_properties(data)
    np.testing.assert_array_equal(props["all"]["digit"], np.concatenate(
        [data[s]["digit"] for s in learning.SPLITS]))  # fmt: skip
    result = dd.analyse(frames, data, props["all"], config.model, 2)
    assert len(result["pooled"]) == 2
    assert result["pooled"][0]["share"] >= result["pooled"][1]["share"] > 0
    for d in [*result["pooled"], result["frames"]]:
        assert all(0 <= v <= 1 + 1e-9 for v in d.values()), d
    text = dd.table("tiny", 0, result)
    assert "pooled direction 2" in text and "position" in text


def test_probes_on_clip_properties_alone():
    data = learning.subsample(fsdd.load_fsdd(fsdd.SAMPLE_DIR), 40)
    props = dd.all_clip_properties(data)
    out = dd.property_probes(data, props, data["speakers"][0], linear_probe.default_config())
    assert set(out) == set(dd.PROPERTY_FEATURES)
    for accuracies in out.values():
        assert set(accuracies) == {"digits", "speakers", "heldout_digits"}
        assert all(0 <= a <= 1 for a in accuracies.values())
    quiet = np.concatenate([np.full(8_000, 0.1), np.full(8_000, 1e-3)]).astype(np.float32)
    speech = dd.clip_properties({"audio": [quiet], "speaker": [0], "digit": [0]})["speech"]
    np.testing.assert_allclose(
        speech, [50 / 99], rtol=1e-6
    )  # Stretches t <= 49 reach the loud half.
    props = dd.clip_properties(data["test"])
    want = [np.log10(len(a) / 16_000) for a in data["test"]["audio"]]
    np.testing.assert_allclose(props["length"], want)


def test_the_centroid_of_a_tone_is_its_frequency():
    t = np.arange(16_000) / 16_000
    np.testing.assert_allclose(dd.centroid(np.sin(2 * np.pi * 1_000 * t)), 3.0, atol=1e-6)
    two = np.sin(2 * np.pi * 1_000 * t) + np.sin(2 * np.pi * 3_000 * t)  # Equal power: 2 kHz.
    np.testing.assert_allclose(dd.centroid(two), np.log10(2_000), atol=1e-6)
    assert dd.centroid(np.zeros(100)) == 0.0
