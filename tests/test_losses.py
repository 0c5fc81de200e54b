"""The objective: invariance against numpy, no target leak into the context path, weighting."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest

from configs import cpu_debug
from wavlejepa import losses, masking, model, sigreg


def _setup(batch=4, samples=8160, seed=0):
    config = cpu_debug.get_config()
    params = model.init(jax.random.PRNGKey(seed), config.model)
    audio = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, samples))
    return config, params, audio


class InvarianceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy(self):
        rng = np.random.default_rng(0)
        pred = rng.standard_normal((3, 2, 5, 8)).astype(np.float32)
        tgt = rng.standard_normal((3, 2, 5, 8)).astype(np.float32)
        valid = rng.random((3, 2, 5)) > 0.3
        got = self.variant(losses.invariance)(pred, tgt, valid)
        want = np.mean(
            [np.mean((pred[i] - tgt[i]) ** 2) for i in zip(*np.nonzero(valid), strict=True)]
        )
        np.testing.assert_allclose(float(got), want, rtol=1e-5)


class ObjectiveTest(chex.TestCase):
    def test_no_target_frame_reaches_the_context_path(self):
        # The predictions may depend on context frames only: the gradient of every prediction
        # with respect to the (post-conv) frames is zero at every non-context frame.
        config, params, audio = _setup(batch=2)
        frames = model.waveform.apply(params["waveform_encoder"], audio, config.model)
        masks = masking.sample(jax.random.PRNGKey(5), config.masking, 2, frames.shape[1])
        weights = jax.random.normal(jax.random.PRNGKey(6), (2, 4, 10, config.model.encoder_width))

        def projected(f, name):
            out = model.forward_from_frames(params, f, masks, config.model)
            return jnp.sum(out[name] * weights)

        grad_pred = np.abs(np.asarray(jax.grad(projected)(frames, "predictions"))).sum(-1)
        grad_tgt = np.abs(np.asarray(jax.grad(projected)(frames, "targets"))).sum(-1)
        for b in range(2):
            ctx = set(np.asarray(masks.context_indices[b, : masks.context_lengths[b]]).tolist())
            for t in range(frames.shape[1]):
                if t in ctx:
                    self.assertGreater(grad_pred[b, t], 0.0)
                else:
                    self.assertEqual(grad_pred[b, t], 0.0, f"frame {t} leaks into predictions")
            # Targets come from the whole crop: every frame influences them.
            self.assertTrue(np.all(grad_tgt[b] > 0))

    def test_loss_is_the_weighted_sum_and_metrics_are_finite(self):
        config, params, audio = _setup()
        loss, metrics = jax.jit(lambda p, a: losses.objective(p, a, jax.random.PRNGKey(2), config))(
            params, audio
        )
        chex.assert_tree_all_finite(metrics)
        lam = config.loss.sigreg_weight
        np.testing.assert_allclose(
            float(loss), (1 - lam) * metrics["invariance"] + lam * metrics["sigreg"], rtol=1e-6
        )

    def test_sigreg_term_is_sigreg_of_pooled_projected_context(self):
        config, params, audio = _setup()
        key = jax.random.PRNGKey(3)
        _, metrics = losses.objective(params, audio, key, config)
        k_masks, k_slices = jax.random.split(key)
        masks = masking.sample(k_masks, config.masking, 4, 50)
        out = model.forward(params, audio, masks, config.model)
        dirs = sigreg.random_directions(
            k_slices, config.model.projector_dim, config.loss.num_slices
        )
        want = sigreg.sigreg(out["projected_pooled"], dirs)
        np.testing.assert_allclose(float(metrics["sigreg"]), float(want), rtol=1e-5)
        # And the pooled embedding is the mean of the valid context frames.
        n = int(masks.context_lengths[1])
        pooled = np.asarray(out["context"][1, :n]).mean(0)
        proj = model.projector.apply(params["projector"], jnp.asarray(pooled)[None], config.model)
        np.testing.assert_allclose(out["projected_pooled"][1], proj[0], rtol=1e-4, atol=1e-5)

    def test_frames_option_and_bad_option(self):
        config, params, audio = _setup()
        config.loss.sigreg_on = "frames"
        _, metrics = losses.objective(params, audio, jax.random.PRNGKey(2), config)
        chex.assert_tree_all_finite(metrics)
        config.loss.sigreg_on = "tokens"
        with self.assertRaisesRegex(ValueError, "sigreg_on"):
            losses.objective(params, audio, jax.random.PRNGKey(2), config)

    def test_fallback_masks_give_finite_loss_and_gradients(self):
        # Dropped target groups (length 0) must not turn attention or the loss into NaN.
        config, params, audio = _setup()
        config.masking.min_context_fraction, config.masking.max_context_fraction = 0.7, 0.8
        config.masking.max_redraws = 2
        grad_fn = jax.value_and_grad(losses.objective, has_aux=True)
        (_, metrics), grads = grad_fn(params, audio, jax.random.PRNGKey(2), config)
        self.assertEqual(float(metrics["context_frames"]), 40.0)  # Fallback: 40 of 50 free.
        chex.assert_tree_all_finite((metrics, grads))

    def test_bfloat16_loss_agrees_with_float32(self):
        # bf16 compute (f32 params, f32 norms/softmax/SIGReg) stays within 2% of the f32 loss.
        config, params, audio = _setup(batch=8)
        key = jax.random.PRNGKey(4)
        loss32, m32 = jax.jit(lambda p: losses.objective(p, audio, key, config))(params)
        config.model.dtype = "bfloat16"
        loss16, m16 = jax.jit(lambda p: losses.objective(p, audio, key, config))(params)
        np.testing.assert_allclose(float(loss16), float(loss32), rtol=0.02)
        np.testing.assert_allclose(float(m16["sigreg"]), float(m32["sigreg"]), rtol=0.05)


if __name__ == "__main__":
    absltest.main()
