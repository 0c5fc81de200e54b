"""research/init_health.py: init health on real clips."""

import jax

from configs import cpu_debug
from research import init_health, learning
from wavlejepa import model
from wavlejepa.data import fsdd


def test_init_health_of_the_tiny_model_on_real_clips():
    config = cpu_debug.get_config()
    params = model.init(jax.random.PRNGKey(0), config.model)
    data = learning.subsample(fsdd.load_fsdd(fsdd.SAMPLE_DIR), 20)
    stats = init_health.init_health(params, config, data, share_frames=10, batch_size=8)
    assert 0 <= stats["position_share"] <= 1 and 0 <= stats["clip_share"] <= 1
    assert 1 <= stats["encoder_rank"] <= config.model.encoder_width
    assert 1 <= stats["pooled_participation"] <= config.model.encoder_width
    assert stats["pooled_spread"] > 0 and stats["within_clip_std"] > 0
