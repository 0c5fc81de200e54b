"""The train step: schedule, decay mask, one compile, and data parallelism on 8 CPU devices."""

from unittest import mock

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl.testing import absltest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from configs import cpu_debug
from wavlejepa import losses, train_state, train_step


class TrainStepTest(chex.TestCase):
    def test_schedule_is_linear_warmup_then_cosine(self):
        config = cpu_debug.get_config()
        config.total_steps, config.optimizer.warmup_steps = 100, 10
        config.optimizer.peak_lr, config.optimizer.end_lr_fraction = 1e-3, 0.1
        lr = train_state.learning_rate_schedule(config)
        np.testing.assert_allclose(lr(5), 5e-4, rtol=1e-6)
        np.testing.assert_allclose(lr(10), 1e-3, rtol=1e-6)
        progress = (55 - 10) / 90
        want = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + np.cos(np.pi * progress))
        np.testing.assert_allclose(lr(55), want, rtol=1e-5)
        np.testing.assert_allclose(lr(100), 1e-4, rtol=1e-5)

    def test_weight_decay_only_on_kernels(self):
        config = cpu_debug.get_config()
        state = train_state.create(jax.random.PRNGKey(0), config)
        mask = train_state._decay_mask(state.params)
        self.assertTrue(mask["context_encoder"]["blocks"]["mlp"]["hidden"]["kernel"])
        self.assertTrue(mask["waveform_encoder"]["conv_0"]["kernel"])
        self.assertFalse(mask["context_encoder"]["blocks"]["mlp"]["hidden"]["bias"])
        self.assertFalse(mask["predictor"]["mask_token"])
        self.assertFalse(mask["context_encoder"]["final_norm"]["scale"])

    def test_conv_lr_multiplier_scales_the_conv_kernels_updates_only(self):
        config = cpu_debug.get_config()
        params = train_state.create(jax.random.PRNGKey(0), config).params
        grads = jax.tree.map(
            lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params
        )

        def updates_after(multiplier, steps=3):
            config.optimizer.conv_lr_multiplier = multiplier
            tx = train_state.create_optimizer(config)
            state, p = tx.init(params), params
            for _ in range(steps):  # Past step 0, where the warm-up's learning rate is 0.
                u, state = tx.update(grads, state, p)
                p = jax.tree.map(jnp.add, p, u)
            return u

        plain, scaled = updates_after(1.0), updates_after(7.0)
        num_convs = len(config.model.conv_kernels)
        for path, a in jax.tree_util.tree_flatten_with_path(plain)[0]:
            names = [entry.key for entry in path]
            b = scaled
            for name in names:
                b = b[name]
            self.assertGreater(float(jnp.abs(a).max()), 0.0, names)
            conv = (
                names[0] == "waveform_encoder"
                and names[-1] == "kernel"
                and names[1] != "projection"
            )
            np.testing.assert_allclose(b, (7.0 if conv else 1.0) * a, rtol=1e-4, atol=1e-9)
            num_convs -= conv
        self.assertEqual(num_convs, 0)  # Every conv layer's kernel was scaled.

    def test_a_config_saved_before_conv_lr_multiplier_existed_builds_the_same_optimizer(self):
        config = cpu_debug.get_config()
        params = train_state.create(jax.random.PRNGKey(0), config).params
        old = ml_collections.ConfigDict(config.to_dict())  # As pretrained.load_config makes.
        del old.optimizer["conv_lr_multiplier"]
        grads = jax.tree.map(jnp.ones_like, params)
        updates = []
        for c in (config, old):
            tx = train_state.create_optimizer(c)
            state = tx.init(params)
            for _ in range(2):
                u, state = tx.update(grads, state, params)
            updates.append(u)
        chex.assert_trees_all_close(*updates)

    def test_steps_compile_once_and_train(self):
        config = cpu_debug.get_config()
        state = train_state.create(jax.random.PRNGKey(0), config)

        @chex.assert_max_traces(n=1)
        def traced_step(state, batch):
            return train_step.train_step(state, batch, config=config)

        step = jax.jit(traced_step, donate_argnums=0)
        batch = {"audio": jax.random.normal(jax.random.PRNGKey(1), (8, 8160))}
        losses_seen = []
        for i in range(12):
            state, metrics = step(state, batch)
            chex.assert_tree_all_finite(metrics)
            losses_seen.append(float(metrics["loss"]))
            self.assertEqual(int(state.step), i + 1)
        # On one repeated batch the loss must go down.
        self.assertLess(np.mean(losses_seen[-3:]), losses_seen[0])
        np.testing.assert_allclose(
            float(metrics["learning_rate"]),
            train_state.learning_rate_schedule(config)(11),
            rtol=1e-6,
        )

    def test_the_batch_reaches_the_objective(self):
        # Plumbing: the objective gets the batch's crops, lengths, clip starts and, when the
        # pipeline adds it, the context's view (None otherwise), with the step's key.
        config = cpu_debug.get_config()
        state = train_state.create(jax.random.PRNGKey(0), config)
        batch = {
            "audio": np.ones((4, 8160), np.float32),
            "lengths": np.full((4,), 8160, np.int32),
            "clip_starts": np.zeros((4, 8), np.int32),
            "context_audio": np.full((4, 8160), 2.0, np.float32),
        }
        seen = []

        def fake_objective(params, audio, key, config, **kwargs):
            seen.append((audio, key, kwargs))
            loss = jnp.sum(jnp.square(params["predictor"]["mask_token"]))
            return loss, {"loss": loss}

        with mock.patch.object(losses, "objective", fake_objective):
            train_step.train_step(state, batch, config=config)
            train_step.train_step(state, {"audio": batch["audio"]}, config=config)
        (audio, key, kwargs), (_, _, plain) = seen
        np.testing.assert_array_equal(audio, batch["audio"])
        np.testing.assert_array_equal(key, jax.random.fold_in(state.rng, state.step))
        for name, kwarg in [
            ("lengths", "lengths_B"),
            ("clip_starts", "clip_starts_BxC"),
            ("context_audio", "context_audio_BxS"),
        ]:
            np.testing.assert_array_equal(kwargs[kwarg], batch[name])
            self.assertIsNone(plain[kwarg])

    def test_eight_devices_match_one_device(self):
        # The same global batch, sharded over 8 devices or on one: same loss, SIGReg (global N,
        # global means) and gradients.
        config = cpu_debug.get_config()
        config.batch_size = 16
        state = train_state.create(jax.random.PRNGKey(0), config)
        audio = jax.random.normal(jax.random.PRNGKey(1), (16, 8160))
        key = jax.random.PRNGKey(2)
        grad_fn = jax.value_and_grad(lambda p, a: losses.objective(p, a, key, config), has_aux=True)
        (_, m1), g1 = jax.jit(grad_fn)(state.params, audio)

        mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
        replicated = NamedSharding(mesh, PartitionSpec())
        sharded_audio = jax.device_put(audio, NamedSharding(mesh, PartitionSpec("data")))
        self.assertEqual(len(sharded_audio.sharding.device_set), 8)
        params8 = jax.device_put(state.params, replicated)
        (_, m8), g8 = jax.jit(grad_fn, out_shardings=replicated)(params8, sharded_audio)
        for name in ("loss", "invariance", "sigreg"):
            np.testing.assert_allclose(float(m8[name]), float(m1[name]), rtol=1e-5, err_msg=name)
        chex.assert_trees_all_close(g8, g1, rtol=1e-4, atol=1e-6)


if __name__ == "__main__":
    absltest.main()
