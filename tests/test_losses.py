"""The objective: invariance and SIGReg against numpy, no target leak into the context path,
the shortcut codes priced above what they gain, padding changes nothing."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import absltest

from configs import cpu_debug
from wavlejepa import losses, masking, model, sigreg, train_state
from wavlejepa.nets import waveform


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

        def projected(f, name):
            out = model.forward_from_frames(params, f, masks, config.model)
            return jnp.sum(out[name] * weights)

        grad = jax.jit(jax.grad(projected), static_argnums=1)
        grad_pred = np.abs(np.asarray(grad(frames, "predictions"))).sum(-1)
        grad_tgt = np.abs(np.asarray(grad(frames, "targets"))).sum(-1)
        for b in range(2):
            ctx = set(np.asarray(masks.context_indices[b, : masks.context_lengths[b]]).tolist())
            for t in range(frames.shape[1]):
                if t in ctx:
                    self.assertGreater(grad_pred[b, t], 0.0)
                else:
                    self.assertEqual(grad_pred[b, t], 0.0, f"frame {t} leaks into predictions")
            # Targets come from the whole crop: every frame influences them.
            self.assertTrue(np.all(grad_tgt[b] > 0))

    def test_context_audio_feeds_the_context_path_only(self):
        # With the context's own view C of crops A: the predictions are those of a forward pass
        # on C alone, the targets and projected frames those of a pass on A alone; the objective's
        # invariance is the error between the two (numpy).
        config, params, audio = _setup(batch=2)
        other = jax.random.normal(jax.random.PRNGKey(9), audio.shape)
        masks = masking.sample(jax.random.PRNGKey(5), config.masking, 2, 50)
        both = model.forward(params, audio, masks, config.model, context_audio_BxS=other)
        on_audio = model.forward(params, audio, masks, config.model)
        on_other = model.forward(params, other, masks, config.model)
        # At init the predictions move little with their context (~1e-4 between these two
        # inputs), so the equalities are held 100 times tighter than that.
        np.testing.assert_allclose(both["predictions"], on_other["predictions"], atol=1e-7)
        for name in ("targets", "projected_frames"):
            np.testing.assert_allclose(both[name], on_audio[name], atol=1e-7)
        moved = jnp.abs(both["predictions"] - on_audio["predictions"]).max()
        self.assertGreater(float(moved), 1e-5)

        key = jax.random.PRNGKey(3)
        _, metrics = losses.objective(params, audio, key, config, context_audio_BxS=other)
        masks = masking.sample(jax.random.split(key)[0], config.masking, 2, 50)
        pred = np.asarray(model.forward(params, other, masks, config.model)["predictions"])
        out = model.forward(params, audio, masks, config.model)
        err = np.mean((pred - np.asarray(out["targets"])) ** 2, axis=-1)
        want = err[np.asarray(out["target_valid"])].mean()
        np.testing.assert_allclose(float(metrics["invariance"]), want, rtol=1e-4)

    def test_loss_is_the_weighted_sum_and_metrics_are_finite(self):
        config, params, audio = _setup()
        loss, metrics = _objective(params, audio, jax.random.PRNGKey(2), config)
        chex.assert_tree_all_finite(metrics)
        lam = config.loss.sigreg_weight
        np.testing.assert_allclose(
            float(loss), (1 - lam) * metrics["invariance"] + lam * metrics["sigreg"], rtol=1e-6
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

    def test_bad_targets_option(self):
        config, params, audio = _setup()
        config.loss.targets = "teacher"
        with self.assertRaisesRegex(ValueError, "config.loss.targets='teacher'"):
            _objective(params, audio, jax.random.PRNGKey(2), config)

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


class ShortcutPriceTest(chex.TestCase):
    """Every shortcut code scores a SIGReg whose price beats the most invariance it can gain."""

    B, T, P = 32, 50, 16  # The quickstart's crops x frames.

    def _sigreg(self, z_BxTxP, centre=True):
        dirs = sigreg.random_directions(jax.random.PRNGKey(0), self.P, 64)
        if not centre:  # Every frame as it is, one row each.
            return float(sigreg.sigreg(jnp.asarray(z_BxTxP).reshape(-1, self.P), dirs))
        rows, weights = losses.sigreg_samples(
            jnp.asarray(z_BxTxP), jnp.ones(z_BxTxP.shape[:2], bool)
        )
        return float(sigreg.sigreg(rows, dirs, weights_N=weights))

    def test_shortcuts_cost_more_than_the_invariance_gains(self):
        rng = np.random.default_rng(0)
        n = self.B * self.T
        gaussian = self._sigreg(rng.standard_normal((self.B, self.T, self.P)))
        position = self._sigreg(
            np.broadcast_to(rng.standard_normal((1, self.T, self.P)), (self.B, self.T, self.P))
        )
        clip = self._sigreg(
            np.broadcast_to(rng.standard_normal((self.B, 1, self.P)), (self.B, self.T, self.P))
        )
        collapsed = self._sigreg(np.ones((self.B, self.T, self.P)))
        self.assertLess(gaussian, 2.0)  # ~1.05 for Gaussian data, whatever N.
        # Position code and collapse: centring leaves a constant sample, ~0.40 * N.
        np.testing.assert_allclose(position, 0.40 * n, rtol=0.02)
        np.testing.assert_allclose(collapsed, 0.40 * n, rtol=0.02)
        # A clip constant errs like B samples, not N: ~1.05 * T.
        self.assertGreater(clip, 0.5 * self.T)
        self.assertLess(clip, 3.0 * self.T)
        # Priced with the default lambda, each shortcut costs more than the invariance it can
        # gain ((1 - lambda) * 1: predicting the mean of unit-variance targets).
        lam = cpu_debug.get_config().loss.sigreg_weight
        for shortcut in (position, clip, collapsed):
            self.assertGreater(lam * (shortcut - gaussian), 1 - lam)

    def test_without_centring_a_position_code_passes_for_spread(self):
        # Why we centre: uncentred, a position code scores far below collapse.
        rng = np.random.default_rng(1)
        z = np.broadcast_to(rng.standard_normal((1, self.T, self.P)), (self.B, self.T, self.P))
        self.assertLess(self._sigreg(z, centre=False), 0.1 * 0.40 * self.B * self.T)


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


class TargetNormTest(chex.TestCase):
    """loss.target_norm="clip": targets normalised over time within each source clip."""

    def test_matches_a_numpy_loop_and_ignores_clip_constants_and_scales(self):
        z, valid, ids = _packed_frames(seed=4)
        rng = np.random.default_rng(5)
        norm = lambda x: np.asarray(
            losses.normalise_within_clips(
                jnp.asarray(x), jnp.asarray(valid), jnp.asarray(ids), num_clips=3
            )
        )
        want = np.zeros_like(z, np.float64)
        for b in range(3):
            for c in range(3):
                sel = valid[b] & (ids[b] == c)
                if sel.any():
                    x = z[b, sel].astype(np.float64)
                    want[b, sel] = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
        got = norm(z)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        self.assertEqual(float(np.abs(got[~valid]).max()), 0.0)  # Padding is 0.
        self.assertEqual(float(np.abs(got[0, 11]).max()), 0.0)  # A one-frame clip is 0.
        # A per-clip constant and a per-clip positive scale of each channel change nothing.
        shift = rng.standard_normal((3, 3, 5))[np.arange(3)[:, None], ids]
        scale = rng.uniform(0.5, 3.0, (3, 3, 5))[np.arange(3)[:, None], ids]
        np.testing.assert_allclose(norm(z * scale + shift)[valid], got[valid], rtol=1e-3, atol=1e-3)

    def test_invariance_compares_the_predictions_with_normalised_targets(self):
        config, params, audio = _setup(batch=4)
        packed = jnp.array([[0, 2400, 5000], [0, 4000, -1], [0, -1, -1], [0, 3000, 6000]])
        key = jax.random.PRNGKey(2)
        _, plain = _objective(params, audio, key, config, clip_starts_BxC=packed)
        config.loss.target_norm = "clip"
        loss, metrics = _objective(params, audio, key, config, clip_starts_BxC=packed)
        # The model's own pass with the objective's masks, normalised in numpy.
        masks = masking.sample(jax.random.split(key)[0], config.masking, 4, 50)
        out = model.forward(params, audio, masks, config.model)
        z = np.asarray(out["projected_frames"], np.float64)
        ids = np.asarray(waveform.frame_clip_ids(packed, 50, config.model))
        normed = np.zeros_like(z)
        for b in range(4):
            for c in np.unique(ids[b]):
                x = z[b, ids[b] == c]
                normed[b, ids[b] == c] = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
        idx = np.asarray(masks.target_indices)
        targets = np.stack([normed[b][idx[b]] for b in range(4)])  # [B, G, Q, P]
        err = np.mean((np.asarray(out["predictions"]) - targets) ** 2, axis=-1)
        want = err[np.asarray(out["target_valid"])].mean()
        np.testing.assert_allclose(float(metrics["invariance"]), want, rtol=1e-4)
        self.assertGreater(abs(float(metrics["invariance"]) - float(plain["invariance"])), 0.1)
        chex.assert_trees_all_close(metrics["sigreg"], plain["sigreg"], rtol=1e-6)

    def test_bad_target_norm(self):
        config, params, audio = _setup()
        config.loss.target_norm = "crop"
        with self.assertRaisesRegex(ValueError, "config.loss.target_norm='crop'"):
            _objective(params, audio, jax.random.PRNGKey(2), config)


class TargetOptionsTest(chex.TestCase):
    def test_ema_targets_come_from_the_teacher_and_not_from_the_online_encoders(self):
        config, params, audio = _setup()
        config.loss.targets = "ema"
        key = jax.random.PRNGKey(5)
        other = model.init(jax.random.PRNGKey(7), config.model)
        teacher = train_state.teacher_of(other)
        grads, metrics = jax.jit(
            jax.grad(lambda p, t: losses.objective(p, audio, key, config, teacher=t), has_aux=True)
        )(params, teacher)
        # The invariance against the teacher's WavJEPA targets (wavjepa route on the teacher).
        masks = masking.sample(jax.random.split(key)[0], config.masking, 4, 50)
        out = model.forward({**params, **teacher}, audio, masks, config.model, target_blocks=2)
        predicted = model.forward(params, audio, masks, config.model)["predictions_encoder"]
        err = jnp.mean(jnp.square(predicted - out["wavjepa_targets"]), axis=-1)
        want = jnp.sum(err * out["target_valid"]) / jnp.sum(out["target_valid"])
        np.testing.assert_allclose(float(metrics["invariance"]), float(want), rtol=1e-4)
        # No gradient reaches the teacher (stop-gradient), so only the online params move.
        teacher_grads = jax.jit(
            jax.grad(lambda t: losses.objective(params, audio, key, config, teacher=t)[0])
        )(teacher)
        self.assertEqual(float(optax.global_norm(teacher_grads)), 0.0)
        self.assertGreater(float(optax.global_norm(grads)), 0.0)
        with self.assertRaisesRegex(ValueError, "teacher"):
            losses.objective(params, audio, key, config)

    def test_teacher_update_is_the_ema(self):
        config = cpu_debug.get_config()
        config.loss.targets = "ema"
        state = train_state.create(jax.random.PRNGKey(0), config)
        chex.assert_trees_all_equal(state.teacher, train_state.teacher_of(state.params))
        online = jax.tree.map(lambda x: x + 1.0, state.params)
        updated = train_state.update_teacher(state.teacher, online, 0.9)
        want = jax.tree.map(
            lambda t, o: 0.9 * t + 0.1 * o, state.teacher, train_state.teacher_of(online)
        )
        chex.assert_trees_all_close(updated, want, rtol=1e-6)
        config.loss.targets = "online"
        self.assertEqual(train_state.create(jax.random.PRNGKey(0), config).teacher, {})


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


class PackedClipsTest(chex.TestCase):
    """attend_within_clips: every attention stays inside a packed crop's source clip."""

    def test_no_frame_of_one_clip_reaches_another_clips_outputs(self):
        config, params, audio = _setup(batch=2)
        frames = model.waveform.apply(params["waveform_encoder"], audio, config.model)
        num_frames = frames.shape[1]
        masks = masking.sample(jax.random.PRNGKey(5), config.masking, 2, num_frames)
        # Crop 0 packs three clips (frames 0-14, 15-31, 32-49 by their centres), crop 1 one.
        starts = jnp.array([[0, 2400, 5000, -1], [0, -1, -1, -1]])
        ids = np.asarray(waveform.frame_clip_ids(starts, num_frames, config.model))
        np.testing.assert_array_equal(np.bincount(ids[0]), [15, 16, 19])
        out = model.forward_from_frames(
            params, frames, masks, config.model, clip_ids_BxT=jnp.asarray(ids)
        )
        ctx = np.asarray(masks.context_indices[0, : masks.context_lengths[0]])
        tgt = np.asarray(masks.target_indices[0]).reshape(-1)
        valid = np.asarray(out["target_valid"][0]).reshape(-1)
        for clip in range(3):
            # A target is kept iff its clip holds a context frame.
            has_context = np.any(ids[0, ctx] == clip)
            np.testing.assert_array_equal(valid[ids[0, tgt] == clip], has_context)

        # |d(selected outputs)/d(frames)| of crop 0, for each selection: one jitted vmap.
        def total(f, frame_sel, prediction_sel):
            o = model.forward_from_frames(
                params, f, masks, config.model, clip_ids_BxT=jnp.asarray(ids)
            )
            return jnp.sum(o["projected_frames"] * frame_sel) + jnp.sum(
                o["predictions"] * prediction_sel
            )

        frame_sels = np.zeros((6, 2, num_frames, 1), np.float32)
        prediction_sels = np.zeros((6, *out["predictions"].shape[:3], 1), np.float32)
        target_ids = ids[0, np.asarray(masks.target_indices[0])]  # [groups, group_frames]
        for clip in range(3):
            frame_sels[clip, 0, :, 0] = ids[0] == clip
            chosen = (target_ids == clip) & np.asarray(out["target_valid"][0])
            prediction_sels[3 + clip, 0, :, :, 0] = chosen
        grads = jax.jit(jax.vmap(jax.grad(total), in_axes=(None, 0, 0)))(
            frames, frame_sels, prediction_sels
        )
        influence = np.abs(np.asarray(grads[:, 0])).sum(-1)  # [6, frames]
        for clip in range(3):
            outside = ids[0] != clip
            self.assertGreater(influence[clip][~outside].min(), 0.0)
            np.testing.assert_array_equal(influence[clip][outside], 0.0)
            if prediction_sels[3 + clip].any():
                np.testing.assert_array_equal(influence[3 + clip][outside], 0.0)
                own_context = np.intersect1d(ctx, np.flatnonzero(~outside))
                self.assertGreater(influence[3 + clip][own_context].min(), 0.0)

    def test_one_clip_per_crop_or_the_option_off_changes_nothing(self):
        config, params, audio = _setup(batch=2)
        key = jax.random.PRNGKey(2)
        _, plain = losses.objective(params, audio, key, config)
        config.model.attend_within_clips = True
        one_clip = jnp.array([[0, -1, -1], [0, -1, -1]])
        _, single = losses.objective(params, audio, key, config, clip_starts_BxC=one_clip)
        chex.assert_trees_all_close(single, plain, rtol=1e-5, atol=1e-6)
        packed = jnp.array([[0, 2400, 5000], [0, 4000, -1]])
        _, within = losses.objective(params, audio, key, config, clip_starts_BxC=packed)
        self.assertFalse(np.allclose(within["invariance"], plain["invariance"]))
        config.model.attend_within_clips = False
        _, off = losses.objective(params, audio, key, config, clip_starts_BxC=packed)
        chex.assert_trees_all_close(off, plain, rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    absltest.main()
