"""research/probe_layers.py: the encoder cut after L blocks embeds as block L's output
(L = 0: the front end's frames through the final LayerNorm)."""

import chex
import jax
import numpy as np
from absl.testing import absltest, parameterized

from configs import cpu_debug
from research import probe_layers
from wavlejepa import diagnostics, model
from wavlejepa.nets import layers, transformer, waveform


class TruncatedTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.config = cpu_debug.get_config()
        self.config.model.encoder_depth = 3
        self.params = model.init(jax.random.PRNGKey(0), self.config.model)
        # A bundled FSDD clip at 16 kHz, normalised.
        self.audio = diagnostics.sample_crops(1, waveform.samples_for_frames(24, self.config.model))

    @parameterized.parameters(0, 1, 2, 3)
    def test_embeds_as_block_l_output_through_the_final_norm(self, blocks):
        cut_params, cut_config = probe_layers.truncated(self.params, self.config, blocks)
        got = model.embed(cut_params, self.audio, cut_config.model)
        # Independently: the full model's blocks one at a time, unstacked, stopped after `blocks`.
        encoder = self.params["context_encoder"]
        x = waveform.apply(self.params["waveform_encoder"], self.audio, self.config.model)
        for i in range(blocks):
            block = jax.tree.map(lambda stacked, i=i: stacked[i], encoder["blocks"])
            x = transformer.block_apply(block, x, num_heads=self.config.model.encoder_heads)
        expected = layers.layer_norm_apply(encoder["final_norm"], x)
        chex.assert_shape(got, (1, 24, self.config.model.encoder_width))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    def test_all_blocks_is_the_model_and_the_input_is_untouched(self):
        cut_params, cut_config = probe_layers.truncated(self.params, self.config, 3)
        chex.assert_trees_all_close(
            model.embed(cut_params, self.audio, cut_config.model),
            model.embed(self.params, self.audio, self.config.model),
        )
        probe_layers.truncated(self.params, self.config, 1)
        self.assertEqual(self.config.model.encoder_depth, 3)
        chex.assert_shape(
            self.params["context_encoder"]["blocks"]["mlp"]["hidden"]["kernel"], (3, None, None)
        )

    @parameterized.parameters(-1, 4)
    def test_blocks_outside_the_encoder_raise(self, blocks):
        with self.assertRaisesRegex(ValueError, r"after 0\.\.3 blocks"):
            probe_layers.truncated(self.params, self.config, blocks)


if __name__ == "__main__":
    absltest.main()
