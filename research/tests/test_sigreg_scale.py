"""research.sigreg_scale: its chunked term gradients against jax.grad of the whole objective."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import cpu_debug
from research import sigreg_scale
from wavlejepa import losses, model


def _batch(crops=4, samples=8160, seed=0):
    audio = jax.random.normal(jax.random.PRNGKey(seed), (crops, samples))
    lengths = jnp.array([samples, samples, 6000, samples])[:crops]
    clip_starts = jnp.array([[0, 3000, -1], [0, -1, -1], [0, 2000, 4000], [0, -1, -1]])[:crops]
    return {"audio": audio, "lengths": lengths, "clip_starts": clip_starts}


def test_chunked_terms_sum_to_the_objectives_gradient():
    config = cpu_debug.get_config()
    config.loss.sigreg_crops, config.loss.sigreg_frames = 3, 20  # A draw, as at scale.
    params = model.init(jax.random.PRNGKey(1), config.model)
    batch, key = _batch(), jax.random.PRNGKey(2)
    grads = sigreg_scale.term_gradients(params, batch, key, {"rule": config}, chunk=3)

    def loss(p):
        return losses.objective(
            p, batch["audio"], key, config, lengths_B=batch["lengths"],
            clip_starts_BxC=batch["clip_starts"],
        )[0]  # fmt: skip

    want = jax.jit(jax.grad(loss))(params)
    got = jax.tree.map(jnp.add, grads["invariance"], grads["rule"])
    for path, g, w in zip(
        jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got), jax.tree.leaves(want),
        strict=True,
    ):  # fmt: skip
        np.testing.assert_allclose(g, w, rtol=2e-3, atol=1e-6, err_msg=str(path[0]))
    # The invariance alone: the gradient of (1 - lambda) * invariance.
    inv = jax.jit(jax.grad(
        lambda p: (1 - config.loss.sigreg_weight)
        * losses.objective(
            p, batch["audio"], key, config, lengths_B=batch["lengths"],
            clip_starts_BxC=batch["clip_starts"],
        )[1]["invariance"]
    ))(params)  # fmt: skip
    np.testing.assert_allclose(
        sigreg_scale.encoder_norm(grads["invariance"]), sigreg_scale.encoder_norm(inv), rtol=1e-3
    )
