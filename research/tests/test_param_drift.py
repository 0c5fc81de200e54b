"""research/param_drift.py: each kernel's RMS at init and its relative change."""

import jax
import numpy as np
from absl.testing import absltest

from configs import cpu_debug
from research import param_drift
from wavlejepa import model


class DriftTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.params = model.init(jax.random.PRNGKey(0), cpu_debug.get_config().model)

    def test_kernels_are_every_leaf_named_kernel_by_path(self):
        got = param_drift.kernels(self.params)
        self.assertIn("waveform_encoder/conv_0", got)
        self.assertIn("context_encoder/blocks/mlp/hidden", got)
        expected = sum(
            1
            for path, _ in jax.tree_util.tree_flatten_with_path(self.params)[0]
            if path[-1].key == "kernel"
        )
        self.assertLen(got, expected)
        np.testing.assert_array_equal(
            got["waveform_encoder/conv_0"], self.params["waveform_encoder"]["conv_0"]["kernel"]
        )

    def test_unchanged_params_drift_zero_and_a_known_step_its_ratio(self):
        same = param_drift.drift(self.params, self.params)
        self.assertTrue(all(v["relative_change"] == 0.0 for v in same.values()))
        # Move conv_1 by 0.1 x itself and the projector's first layer by a constant 0.01.
        moved = jax.tree.map(lambda x: x, self.params)
        conv_1 = np.asarray(self.params["waveform_encoder"]["conv_1"]["kernel"], np.float64)
        moved["waveform_encoder"]["conv_1"] = {"kernel": 1.1 * conv_1}
        dense = np.asarray(self.params["projector"]["dense_0"]["kernel"], np.float64)
        moved["projector"]["dense_0"] = {
            **self.params["projector"]["dense_0"],
            "kernel": dense + 0.01,
        }
        got = param_drift.drift(self.params, moved)
        self.assertAlmostEqual(got["waveform_encoder/conv_1"]["relative_change"], 0.1, places=6)
        rms = np.sqrt(np.mean(dense**2))
        self.assertAlmostEqual(got["projector/dense_0"]["relative_change"], 0.01 / rms, places=5)
        self.assertAlmostEqual(got["projector/dense_0"]["init_rms"], rms, places=6)
        self.assertEqual(got["waveform_encoder/conv_0"]["relative_change"], 0.0)


if __name__ == "__main__":
    absltest.main()
