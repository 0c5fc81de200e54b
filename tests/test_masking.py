"""Property tests of the context/target masks."""

import chex
import jax
import numpy as np
from absl.testing import absltest, parameterized

from configs import cpu_debug, default
from wavlejepa import masking

NUM_FRAMES = 200


def _masks(key, cfg=None, batch=64, num_frames=NUM_FRAMES):
    """Masks as numpy arrays, drawn under jit as in training (op by op is far slower)."""
    cfg = cfg or default.get_config().masking
    masks = jax.jit(lambda k: masking.sample(k, cfg, batch, num_frames))(key)
    return jax.tree.map(np.asarray, masks)


class MaskingTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_shapes_and_dtypes(self):
        cfg = default.get_config().masking
        m = self.variant(lambda k: masking.sample(k, cfg, 5, NUM_FRAMES))(jax.random.PRNGKey(0))
        capacity = masking.context_capacity(cfg, NUM_FRAMES)
        chex.assert_shape(m.context_indices, (5, capacity))
        chex.assert_shape(m.context_lengths, (5,))
        chex.assert_shape(m.target_indices, (5, 4, 50))
        chex.assert_shape(m.target_lengths, (5, 4))
        chex.assert_type([m.context_indices, m.target_indices], np.int32)

    @parameterized.parameters(0, 1, 2)
    def test_invariants(self, seed):
        cfg = default.get_config().masking
        m = _masks(jax.random.PRNGKey(seed), cfg, batch=128)
        min_frames = int(np.ceil(cfg.min_context_fraction * NUM_FRAMES))
        for b in range(128):
            ctx = m.context_indices[b, : m.context_lengths[b]]
            self.assertGreaterEqual(len(ctx), min_frames)
            self.assertTrue(np.all((ctx >= 0) & (ctx < NUM_FRAMES)))
            self.assertEqual(len(set(ctx)), len(ctx))
            np.testing.assert_array_equal(ctx, np.sort(ctx))
            for g in range(cfg.num_target_groups):
                tgt = m.target_indices[b, g, : m.target_lengths[b, g]]
                self.assertTrue(np.all((tgt >= 0) & (tgt < NUM_FRAMES)))
                # Spans of a group do not overlap: every frame appears once.
                self.assertEqual(len(set(tgt)), len(tgt))
                # Made of whole spans of span_frames consecutive frames.
                spans = tgt.reshape(-1, cfg.span_frames)
                np.testing.assert_array_equal(np.diff(spans, axis=1), 1)
                # The context never overlaps any valid target.
                self.assertFalse(set(ctx) & set(tgt))
        # Padding entries are the index 0 placeholder.
        pad = np.arange(m.context_indices.shape[1])[None] >= m.context_lengths[:, None]
        self.assertTrue(np.all(m.context_indices[pad] == 0))

    def test_statistics_match_wavjepa(self):
        # WavJEPA measured 39 context frames of 200 on average (range 20-77) and ~127 frames
        # covered by all targets: ours draws groups of exactly 50 non-overlapping frames.
        m = _masks(jax.random.PRNGKey(7), batch=2000)
        self.assertTrue(30 <= m.context_lengths.mean() <= 45, m.context_lengths.mean())
        union = [len(set(m.target_indices[b].ravel())) for b in range(2000)]
        self.assertTrue(120 <= np.mean(union) <= 145, np.mean(union))
        self.assertTrue(np.all(m.target_lengths == 50))

    def test_deterministic_for_a_key_and_different_across_keys(self):
        a, b = _masks(jax.random.PRNGKey(3)), _masks(jax.random.PRNGKey(3))
        c = _masks(jax.random.PRNGKey(4))
        chex.assert_trees_all_equal(a, b)
        self.assertFalse(np.array_equal(a.target_indices, c.target_indices))
        self.assertFalse(np.array_equal(a.context_indices, c.context_indices))
        # Different crops of one batch get different masks.
        self.assertFalse(np.array_equal(a.target_indices[0], a.target_indices[1]))

    def test_fallback_when_redraws_run_out(self):
        # Demanding 60% context is out of reach of the normal draw (~18%), so after max_redraws
        # every crop falls back to its first group with no drop spans: 150 context frames,
        # capped at the capacity, and the other groups marked invalid.
        cfg = default.get_config().masking
        cfg.min_context_fraction = 0.6
        cfg.max_context_fraction = 0.7
        cfg.max_redraws = 3
        m = _masks(jax.random.PRNGKey(0), cfg, batch=16)
        np.testing.assert_array_equal(m.target_lengths[:, 0], 50)
        np.testing.assert_array_equal(m.target_lengths[:, 1:], 0)
        np.testing.assert_array_equal(m.context_lengths, 140)
        for b in range(16):
            self.assertFalse(set(m.context_indices[b]) & set(m.target_indices[b, 0]))

    def test_capacity_keeps_a_random_subset(self):
        cfg = default.get_config().masking
        cfg.num_context_drop_spans = 0
        cfg.num_target_groups = 1
        cfg.max_context_fraction = 0.2  # 40 of the 150 free frames.
        m = _masks(jax.random.PRNGKey(1), cfg, batch=8)
        np.testing.assert_array_equal(m.context_lengths, 40)
        self.assertFalse(np.array_equal(m.context_indices[0], m.context_indices[1]))

    def test_validate_names_the_problem(self):
        cfg = cpu_debug.get_config().masking
        masking.validate(cfg, 50)
        cfg.spans_per_target_group = 5
        with self.assertRaisesRegex(ValueError, "crop_seconds"):
            masking.validate(cfg, 50)
        cfg = default.get_config().masking
        cfg.min_context_fraction = 0.0
        with self.assertRaisesRegex(ValueError, "min_context_fraction"):
            masking.validate(cfg, 200)


if __name__ == "__main__":
    absltest.main()
