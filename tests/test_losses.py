"""The objective: invariance and SIGReg against numpy, no target leak into the context path,
the shortcut codes priced above what they gain, padding changes nothing."""

from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest, parameterized

from configs import cpu_debug
from wavlejepa import losses, masking, model, sigreg
from wavlejepa.nets import projector, waveform


def _setup(batch=4, samples=8160, seed=0):
    config = cpu_debug.get_config()
    params = model.init(jax.random.PRNGKey(seed), config.model)
    audio = jax.random.normal(jax.random.PRNGKey(seed + 1), (batch, samples))
    return config, params, audio


def _objective(params, audio, key, config, **kwargs):
    """`losses.objective` under jit: differentiated op by op, the model takes a minute on 2 CPU
    cores (a forward pass alone is quicker eagerly than compiled)."""
    return jax.jit(lambda p, a, k: losses.objective(p, a, k, config, **kwargs))(params, audio, key)


def _epps_pulley_numpy(x_NxM, t_max=3.0, num_knots=17):
    """The LeJEPA library's statistic, written out in float64 numpy."""
    t = np.linspace(0.0, t_max, num_knots)
    w = np.full(num_knots, 2 * t_max / (num_knots - 1))
    w[[0, -1]] /= 2
    w *= np.exp(-0.5 * t**2)
    tx = x_NxM[:, :, None] * t
    err = (np.cos(tx).mean(0) - np.exp(-0.5 * t**2)) ** 2 + np.sin(tx).mean(0) ** 2
    return x_NxM.shape[0] * (err @ w)


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
        weights = jax.random.normal(jax.random.PRNGKey(6), (2, 4, 10, config.model.projector_dim))
        # `model.predict` is the forward pass's context path.
        np.testing.assert_array_equal(
            model.predict(params, frames, masks, config.model),
            model.forward(params, audio, masks, config.model)["predictions"],
        )

        predicted = lambda f: jnp.sum(model.predict(params, f, masks, config.model) * weights)
        grad_pred = np.abs(np.asarray(jax.jit(jax.grad(predicted))(frames))).sum(-1)
        for b in range(2):
            ctx = set(np.asarray(masks.context_indices[b, : masks.context_lengths[b]]).tolist())
            for t in range(frames.shape[1]):
                if t in ctx:
                    self.assertGreater(grad_pred[b, t], 0.0)
                else:
                    self.assertEqual(grad_pred[b, t], 0.0, f"frame {t} leaks into predictions")

    def test_targets_carry_gradients_into_both_encoders(self):
        # LeJEPA: no teacher and no stop-gradient, the invariance moves the targets' side too.
        config, params, audio = _setup(batch=2)
        masks = masking.sample(jax.random.PRNGKey(5), config.masking, 2, 50)
        weights = jax.random.normal(jax.random.PRNGKey(6), (2, 4, 10, config.model.projector_dim))
        targets = lambda p: jnp.sum(
            model.forward(p, audio, masks, config.model)["targets"] * weights
        )
        grads = jax.jit(jax.grad(targets))(params)
        for name in ("waveform_encoder", "context_encoder", "projector"):
            self.assertGreater(float(optax.global_norm(grads[name])), 0.0, name)
        self.assertEqual(float(optax.global_norm(grads["predictor"])), 0.0)

    def test_loss_is_the_weighted_sum_and_metrics_are_finite(self):
        config, params, audio = _setup()
        loss, metrics = _objective(params, audio, jax.random.PRNGKey(2), config)
        chex.assert_tree_all_finite(metrics)
        lam, lam_clip = config.loss.sigreg_weight, config.loss.clip_sigreg_weight
        self.assertGreater(lam_clip, 0.0)  # The recipe: both statistics.
        np.testing.assert_allclose(
            float(loss),
            (1 - lam) * metrics["invariance"]
            + lam * metrics["sigreg"]
            + lam_clip * metrics["sigreg_within_clips"],
            rtol=1e-6,
        )

    def test_sigreg_term_matches_numpy(self):
        # SIGReg of the projected frames, centred per position over the batch, pooled: checked
        # against an independent float64 Epps-Pulley on the model's own projected frames.
        config, params, audio = _setup()
        key = jax.random.PRNGKey(3)
        _, metrics = losses.objective(params, audio, key, config)
        k_masks, k_slices = jax.random.split(key)
        masks = masking.sample(k_masks, config.masking, 4, 50)
        out = model.forward(params, audio, masks, config.model)
        z = np.asarray(out["projected_frames"], np.float64)  # [4, 50, P]
        z = (z - z.mean(axis=0, keepdims=True)).reshape(-1, z.shape[-1])
        dirs = np.asarray(
            sigreg.random_directions(k_slices, config.model.projector_dim, config.loss.num_slices)
        )
        want = np.mean(_epps_pulley_numpy(z @ dirs))
        np.testing.assert_allclose(float(metrics["sigreg"]), want, rtol=2e-4)

    def test_outputs_hold_the_embedding_of_every_real_frame(self):
        # The forward pass behind the loss encodes all frames as `model.embed` does: its
        # encoder frames are the embedding at every real frame of padded crops, and its
        # projected frames their projection (what the eval's ranks read).
        config, params, audio = _setup()
        lengths = jnp.asarray([8160, 6000, 4000, 2500])
        key = jax.random.PRNGKey(2)
        _, metrics, out = jax.jit(
            lambda p, a: losses.objective_and_outputs(p, a, key, config, lengths_B=lengths)
        )(params, audio)
        embedded = jax.jit(lambda p, a: model.embed(p, a, config.model, lengths_B=lengths))(
            params, audio
        )
        real = np.asarray(out["frame_valid"])
        np.testing.assert_array_equal(real.sum(1), waveform.valid_frames(lengths, config.model))
        np.testing.assert_allclose(float(metrics["real_frames"]), real.sum(1).mean())
        encoded = np.asarray(out["encoder_frames"])
        np.testing.assert_allclose(encoded[real], np.asarray(embedded)[real], rtol=1e-6, atol=1e-6)
        z = projector.apply(params["projector"], embedded, config.model)
        np.testing.assert_allclose(
            np.asarray(out["projected_frames"])[real], np.asarray(z)[real], rtol=1e-5, atol=1e-6
        )

    def test_fallback_masks_give_finite_loss_and_gradients(self):
        # Dropped target groups (length 0) must not turn attention or the loss into NaN.
        config, params, audio = _setup()
        config.masking.min_context_fraction, config.masking.max_context_fraction = 0.7, 0.8
        config.masking.max_redraws = 2
        grad_fn = jax.jit(
            jax.value_and_grad(lambda p, a, k: losses.objective(p, a, k, config), has_aux=True)
        )
        (_, metrics), grads = grad_fn(params, audio, jax.random.PRNGKey(2))
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


class ShortcutPriceTest(chex.TestCase, parameterized.TestCase):
    """What each shortcut code costs at the recipe's two weights against the most invariance
    it can gain (losses.py's argument, with its numbers), at the quickstart's shape (32 crops x
    50 frames: SIGReg sees every row) and at 4 x 4 times that (it sees a 32 x 50 sample)."""

    P = 16

    def _config(self):
        config = cpu_debug.get_config()
        config.model.projector_dim, config.loss.num_slices = self.P, 64
        return config

    def _statistics(self, z_BxTxP, key=0):
        """`(first, second)` statistic of `losses.sigreg_statistics`, the training path."""
        z = jnp.asarray(z_BxTxP, jnp.float32)
        stats = losses.sigreg_statistics(
            z, jnp.ones(z.shape[:2], bool), jax.random.PRNGKey(key), self._config(), None
        )
        return float(stats["sigreg"]), float(stats["sigreg_within_clips"])

    @parameterized.parameters((32, 50), (128, 200))
    def test_shortcuts_cost_more_than_the_invariance_gains(self, B, T):
        rng = np.random.default_rng(0)
        n = 32 * 50  # The rows tested, whatever the batch.
        shortcuts = {
            "gaussian": rng.standard_normal((B, T, self.P)),
            "position": np.broadcast_to(rng.standard_normal((1, T, self.P)), (B, T, self.P)),
            "clip": np.broadcast_to(rng.standard_normal((B, 1, self.P)), (B, T, self.P)),
            "collapse": np.ones((B, T, self.P)),
        }
        (gaussian, gaussian_within), position, clip, collapsed = (
            self._statistics(z) for z in shortcuts.values()
        )
        self.assertLess(gaussian, 2.0)  # ~1.05 for Gaussian data, whatever N.
        self.assertLess(gaussian_within, 2.0)
        # Position code and collapse: centring leaves a constant sample, ~0.40 * N, in both.
        np.testing.assert_allclose([*position, *collapsed], 0.40 * n, rtol=0.02)
        # A clip constant errs like 32 samples, not N, in the first: ~0.6 * 50; as collapse in
        # the second (its rows also lose their clip's mean).
        np.testing.assert_allclose(clip[0], 0.6 * 50, rtol=0.2)
        np.testing.assert_allclose(clip[1], 0.40 * n, rtol=0.02)
        # At the recipe's weights collapse and a position code cost far more than the most
        # invariance they can gain ((1 - lambda) * 1: predicting the mean of unit-variance
        # targets), 7.0; a clip constant costs about that gain, 0.9.
        loss = self._config().loss
        lam, lam_clip = loss.sigreg_weight, loss.clip_sigreg_weight
        position_price, clip_price, collapse_price = (
            lam * (s[0] - gaussian) + lam_clip * (s[1] - gaussian_within)
            for s in (position, clip, collapsed)
        )
        np.testing.assert_allclose([position_price, collapse_price], 7.0, rtol=0.02)
        self.assertGreater(min(position_price, collapse_price), 5 * (1 - lam))
        np.testing.assert_allclose(clip_price, 0.9, atol=0.1)

    def test_without_centring_a_position_code_passes_for_spread(self):
        # Why we centre: uncentred, a position code scores far below collapse.
        B, T = 32, 50
        z = np.broadcast_to(np.random.default_rng(1).standard_normal((1, T, self.P)), (B, T, 16))
        dirs = sigreg.random_directions(jax.random.PRNGKey(0), self.P, 64)
        uncentred = sigreg.sigreg(jnp.asarray(z, jnp.float32).reshape(-1, self.P), dirs)
        self.assertLess(float(uncentred), 0.1 * 0.40 * B * T)


class ScaleRuleTest(chex.TestCase):
    """SIGReg tests loss.sigreg_crops x loss.sigreg_frames rows a step, drawn afresh."""

    def test_no_sample_where_the_batch_is_no_larger(self):
        valid = jnp.ones((32, 50), bool)
        self.assertIsNone(losses.sample_indices(jax.random.PRNGKey(0), valid, 32, 50))

    def test_sample_holds_distinct_crops_and_real_frames(self):
        B, T, C, F = 20, 30, 8, 10
        real = np.full(B, T)
        real[:5] = [3, 12, 30, 10, 1]  # Padded crops: fewer real frames than F in some.
        valid = np.arange(T)[None, :] < real[:, None]
        for seed in range(5):
            flat = np.asarray(
                losses.sample_indices(jax.random.PRNGKey(seed), jnp.asarray(valid), C, F)
            )
            crops, frames = np.divmod(flat.reshape(C, F), T)
            self.assertTrue(np.all(crops == crops[:, :1]))  # F entries of each drawn crop.
            self.assertLen(set(crops[:, 0]), C)  # C distinct crops.
            for c, f in zip(crops[:, 0], frames, strict=True):
                self.assertLen(set(f), F)
                # Every real frame is drawn before any padding frame.
                self.assertEqual(int(valid[c, f].sum()), min(real[c], F))

    def test_every_frame_and_crop_is_drawn_alike(self):
        # Over many draws each crop is drawn C / B of the time, each real frame F / T.
        B, T, C, F = 6, 8, 2, 4
        counts = np.zeros((B, T))
        keys = jax.random.split(jax.random.PRNGKey(0), 3000)
        draw = jax.jit(jax.vmap(lambda k: losses.sample_indices(k, jnp.ones((B, T), bool), C, F)))
        np.add.at(counts.reshape(-1), np.asarray(draw(keys)).reshape(-1), 1)
        np.testing.assert_allclose(counts / 3000, C / B * F / T, atol=0.03)

    def test_the_loss_sees_the_sample_only(self):
        # At a batch larger than the sample, SIGReg equals the statistic of the drawn rows,
        # after centring over the whole batch.
        config, params, audio = _setup(batch=6)
        config.loss.sigreg_crops, config.loss.sigreg_frames = 3, 20
        key = jax.random.PRNGKey(4)
        _, metrics = _objective(params, audio, key, config)
        masks = masking.sample(jax.random.split(key)[0], config.masking, 6, 50)
        out = model.forward(params, audio, masks, config.model)
        k_slices = jax.random.split(key)[1]
        picked = losses.sample_indices(jax.random.fold_in(k_slices, 1), out["frame_valid"], 3, 20)
        self.assertEqual(picked.shape, (60,))
        rows, weights = losses.sigreg_samples(out["projected_frames"], out["frame_valid"])
        dirs = sigreg.random_directions(
            k_slices, config.model.projector_dim, config.loss.num_slices
        )
        want = sigreg.sigreg(rows[picked], dirs, weights_N=weights[picked])
        np.testing.assert_allclose(metrics["sigreg"], want, rtol=1e-4)
        self.assertAlmostEqual(sigreg.sigreg_collapse_value(config), 0.40 * 60)


def _packed_frames(seed):
    """`(z [3, 12, 5], valid [3, 12], clip ids [3, 12])`: crops of 3, 1 and 2 source clips,
    with 12, 9 and 6 real frames (crop 0's third clip is a single frame)."""
    z = np.random.default_rng(seed).standard_normal((3, 12, 5)).astype(np.float32)
    valid = np.arange(12)[None, :] < np.array([[12], [9], [6]])
    ids = np.array([[0] * 4 + [1] * 7 + [2], [0] * 12, [0] * 2 + [1] * 10])
    return z, valid, ids


class ClipCentringTest(chex.TestCase):
    """loss.clip_sigreg_weight: a second statistic whose rows also lose their clip's mean."""

    def test_rows_match_a_numpy_loop(self):
        z, valid, ids = _packed_frames(seed=2)
        rows, weights = losses.sigreg_samples(
            jnp.asarray(z), jnp.asarray(valid), jnp.asarray(ids), num_clips=3
        )
        want = np.zeros_like(z, np.float64)
        want_w = np.zeros(valid.shape)
        for t in range(12):  # First the position mean over the crops where frame t is real.
            want[:, t] = z[:, t] - z[valid[:, t], t].mean(axis=0)
        for b in range(3):  # Then each clip's mean over its real frames, rescaled.
            for c in range(3):
                sel = valid[b] & (ids[b] == c)
                k = sel.sum()
                if k > 1:
                    want[b, sel] = (want[b, sel] - want[b, sel].mean(0)) * np.sqrt(k / (k - 1))
                    want_w[b, sel] = 1.0
        kept = want_w.reshape(-1) > 0
        np.testing.assert_array_equal(np.asarray(weights), want_w.reshape(-1))
        # The one-frame clip of crop 0 and the padding weigh 0; the kept rows match.
        self.assertEqual(int(want_w.sum()), 11 + 9 + 6)
        np.testing.assert_allclose(
            np.asarray(rows)[kept], want.reshape(-1, 5)[kept], rtol=1e-5, atol=1e-5
        )

    def test_second_statistic_is_added_with_its_weight(self):
        config, params, audio = _setup(batch=4)
        packed = jnp.array([[0, 2400, 5000], [0, 4000, -1], [0, -1, -1], [0, 3000, 6000]])
        key = jax.random.PRNGKey(2)
        config.loss.clip_sigreg_weight = 0.0
        loss0, plain = _objective(params, audio, key, config, clip_starts_BxC=packed)
        self.assertNotIn("sigreg_within_clips", plain)
        config.loss.clip_sigreg_weight = 0.003
        loss, metrics = _objective(params, audio, key, config, clip_starts_BxC=packed)
        lam = config.loss.sigreg_weight
        chex.assert_trees_all_close(metrics["sigreg"], plain["sigreg"], rtol=1e-6)
        np.testing.assert_allclose(
            float(loss),
            (1 - lam) * metrics["invariance"]
            + lam * metrics["sigreg"]
            + 0.003 * metrics["sigreg_within_clips"],
            rtol=1e-6,
        )
        self.assertGreater(float(loss), float(loss0))

    def test_clip_starts_reach_the_second_statistic_only(self):
        # The packed crops' clip starts become the second statistic's frame clip ids
        # (`waveform.frame_clip_ids`); the invariance and the first statistic ignore them.
        config, params, audio = _setup(batch=2)
        key = jax.random.PRNGKey(2)
        packed = jnp.array([[0, 2400, 5000], [0, 4000, -1]])
        with mock.patch.object(losses, "sigreg_samples", wraps=losses.sigreg_samples) as rows:
            _, within = losses.objective(params, audio, key, config, clip_starts_BxC=packed)
        (first, second) = rows.call_args_list
        self.assertEqual(len(first.args), 2)
        np.testing.assert_array_equal(
            second.args[2], waveform.frame_clip_ids(packed, 50, config.model)
        )
        self.assertEqual(second.args[3], 3)
        _, plain = losses.objective(params, audio, key, config)
        for name in ("invariance", "sigreg", "context_frames", "target_frames"):
            np.testing.assert_allclose(within[name], plain[name], rtol=1e-5, err_msg=name)

    def test_a_clip_constant_scores_as_collapse(self):
        B, T, P = 32, 50, 16
        rng = np.random.default_rng(3)
        ids = np.zeros((B, T), np.int32)
        ids[:, 20:], ids[:, 45:] = 1, 2  # Three packed clips a crop.
        dirs = sigreg.random_directions(jax.random.PRNGKey(0), P, 64)

        def score(z, clip_ids):
            rows, weights = losses.sigreg_samples(
                jnp.asarray(z), jnp.ones((B, T), bool), clip_ids, num_clips=3
            )
            return float(sigreg.sigreg(rows, dirs, weights_N=weights))

        constant = rng.standard_normal((B, 3, P))[np.arange(B)[:, None], ids]
        # Position centring alone: 3 distinct values a crop pass for spread (~T / 3).
        self.assertLess(score(constant, None), 0.05 * 0.40 * B * T)
        np.testing.assert_allclose(score(constant, jnp.asarray(ids)), 0.40 * B * T, rtol=0.02)
        self.assertLess(score(rng.standard_normal((B, T, P)), jnp.asarray(ids)), 2.0)


class PaddingTest(chex.TestCase):
    def test_padding_changes_no_loss_term(self):
        # Crops with real audio only at their start: whatever the padding holds, every metric is
        # the same (the masks, the front end's norm, attention and SIGReg all ignore it).
        config, params, audio = _setup(batch=4)
        lengths = jnp.asarray([8160, 6000, 4000, 2500])
        pad = jnp.arange(8160)[None, :] >= lengths[:, None]
        noise = jax.random.normal(jax.random.PRNGKey(9), audio.shape)
        objective = jax.jit(
            lambda a: losses.objective(params, a, jax.random.PRNGKey(2), config, lengths_B=lengths)
        )
        _, with_zeros = objective(jnp.where(pad, 0.0, audio))
        _, with_noise = objective(jnp.where(pad, 10.0 * noise, audio))
        chex.assert_trees_all_close(with_zeros, with_noise, rtol=1e-5, atol=1e-6)
        # And the padded frames are really gone: 50 frames in all, fewer real.
        want_real = np.mean([waveform.num_frames(int(n), config.model) for n in lengths])
        np.testing.assert_allclose(float(with_zeros["real_frames"]), want_real)

    def test_restricted_masks_hold_real_frames_only(self):
        config = cpu_debug.get_config()
        masks = masking.sample(jax.random.PRNGKey(0), config.masking, 8, 50)
        valid = jnp.asarray([50, 45, 30, 20, 12, 8, 3, 1])
        restricted = masking.restrict(masks, valid)
        for b in range(8):
            n = int(restricted.context_lengths[b])
            ctx = np.asarray(restricted.context_indices[b, :n])
            self.assertTrue(np.all(ctx < int(valid[b])))
            old = np.asarray(masks.context_indices[b, : int(masks.context_lengths[b])])
            want = old[old < int(valid[b])]
            np.testing.assert_array_equal(ctx, want if len(want) else [0])
            for g in range(masks.target_indices.shape[1]):
                m = int(restricted.target_lengths[b, g])
                old = np.asarray(masks.target_indices[b, g, : int(masks.target_lengths[b, g])])
                np.testing.assert_array_equal(
                    restricted.target_indices[b, g, :m], old[old < int(valid[b])]
                )


if __name__ == "__main__":
    absltest.main()
