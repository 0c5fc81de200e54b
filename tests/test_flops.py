"""The analytic FLOP count against XLA's cost analysis, and one compile per shape."""

import functools

import chex
import jax
import jax.numpy as jnp
from absl.testing import absltest

from configs import cpu_debug, default
from wavlejepa import compile_count, flops, masking, train_state, train_step
from wavlejepa.nets import predictor, waveform


class FlopsTest(chex.TestCase):
    def test_analytic_count_within_10_percent_of_xla(self):
        config = cpu_debug.get_config()
        config.model.scan_layers = False  # XLA's cost analysis counts a loop body only once.
        num_samples = round(config.dataset.crop_seconds * config.dataset.sample_rate)
        state = jax.eval_shape(lambda k: train_state.create(k, config), jax.random.PRNGKey(0))
        batch = {"audio": jax.ShapeDtypeStruct((config.batch_size, num_samples), jnp.float32)}
        step = jax.jit(functools.partial(train_step.train_step, config=config))
        xla = step.lower(state, batch).compile().cost_analysis()["flops"]
        analytic = flops.train_step_flops(config, num_samples)
        self.assertLess(abs(analytic - xla) / xla, 0.10, f"analytic {analytic:.4g} xla {xla:.4g}")
        # Matmuls and convs are most of it even for the tiny model.
        self.assertGreater(
            flops.train_step_flops(config, num_samples, elementwise=False), 0.8 * xla
        )

    def test_predictor_count_within_3_percent_of_xla(self):
        # The base predictor alone, forward: its target groups share the context's projection
        # and keys/values, and the analytic count must say so (repeating the context per group
        # would cost XLA 20% more FLOPs than this count).
        config = default.get_config()
        config.batch_size = 8
        m = config.model
        m.scan_layers = False
        num_samples = round(config.dataset.crop_seconds * config.dataset.sample_rate)
        frames = waveform.num_frames(num_samples, m)
        capacity = masking.context_capacity(config.masking, frames)
        groups = config.masking.num_target_groups
        queries = config.masking.spans_per_target_group * config.masking.span_frames
        rows = config.batch_size * groups
        params = jax.eval_shape(lambda k: predictor.init(k, m), jax.random.PRNGKey(0))

        def apply(p, context, positions):
            return predictor.apply(
                p, context, jnp.full((config.batch_size,), capacity), positions,
                jnp.full((rows,), queries), m, num_frames=frames, groups_per_context=groups,
            )  # fmt: skip

        context = jax.ShapeDtypeStruct((config.batch_size, capacity, m.encoder_width), jnp.float32)
        positions = jax.ShapeDtypeStruct((rows, queries), jnp.int32)
        xla = jax.jit(apply).lower(params, context, positions).compile().cost_analysis()["flops"]
        analytic = flops.forward_flops(config, num_samples)["predictor"]
        self.assertLess(abs(analytic - xla) / xla, 0.03, f"analytic {analytic:.4g} xla {xla:.4g}")

    def test_attention_term_closed_form(self):
        # One encoder block over T tokens: 4 projections 2*T*D*D, scores and weighted values
        # 2 * 2*T*T*D, MLP 2 * 2*T*D*M.
        t, d, m = 7, 12, 48
        self.assertEqual(
            flops._encoder_block(t, d, m), 8 * t * d * d + 4 * t * t * d + 4 * t * d * m
        )

    def test_train_step_compiles_once_over_steps_of_one_shape(self):
        config = cpu_debug.get_config()
        state = train_state.create(jax.random.PRNGKey(0), config)
        step = jax.jit(functools.partial(train_step.train_step, config=config), donate_argnums=0)
        batches = [jax.random.normal(jax.random.PRNGKey(i), (8, 8160)) for i in range(5)]
        longer = jax.block_until_ready(jax.random.normal(jax.random.PRNGKey(9), (8, 8320)))
        with compile_count.CompileCounter() as counter:
            for audio in batches:
                state, metrics = step(state, {"audio": audio})
            jax.block_until_ready(metrics)
        self.assertEqual(counter.count, 1)
        # A new crop length is one more compile: the counter does see them.
        with compile_count.CompileCounter() as counter:
            state, metrics = step(state, {"audio": longer})
            jax.block_until_ready(metrics)
        self.assertEqual(counter.count, 1)


if __name__ == "__main__":
    absltest.main()
