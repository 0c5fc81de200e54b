"""research/init_health.py: the identity projection it swaps in, and init health on real clips."""

import jax
import numpy as np
import pytest

from configs import cpu_debug
from research import init_health, learning
from wavlejepa import model
from wavlejepa.data import fsdd


def _params(channels: int, width: int) -> dict:
    rng = np.random.default_rng(0)
    projection = {"kernel": rng.normal(size=(channels, width)), "bias": rng.normal(size=width)}
    return {"waveform_encoder": {"projection": projection, "conv_0": 1}, "predictor": 2}


def test_the_identity_projection_passes_features_through_and_touches_nothing_else():
    params = init_health.identity_projection(_params(8, 8))
    x = np.random.default_rng(1).normal(size=(5, 8))
    projection = params["waveform_encoder"]["projection"]
    np.testing.assert_array_equal(x @ projection["kernel"] + projection["bias"], x)
    assert params["waveform_encoder"]["conv_0"] == 1 and params["predictor"] == 2
    with pytest.raises(ValueError, match="maps 8 channels to 16"):
        init_health.identity_projection(_params(8, 16))


def test_init_health_of_the_tiny_model_on_real_clips():
    config = cpu_debug.get_config()
    params = model.init(jax.random.PRNGKey(0), config.model)
    data = learning.subsample(fsdd.load_fsdd(fsdd.SAMPLE_DIR), 20)
    stats = init_health.init_health(params, config, data, share_frames=10, batch_size=8)
    assert 0 <= stats["position_share"] <= 1 and 0 <= stats["clip_share"] <= 1
    assert 1 <= stats["encoder_rank"] <= config.model.encoder_width
    assert 1 <= stats["pooled_participation"] <= config.model.encoder_width
    assert stats["pooled_spread"] > 0 and stats["within_clip_std"] > 0
