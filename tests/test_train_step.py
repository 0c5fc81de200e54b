"""The train step: schedule, decay mask, one compile, and data parallelism on 8 CPU devices."""

import functools
from unittest import mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from configs import cpu_debug
from wavlejepa import losses, model, train_state, train_step
from wavlejepa.nets import encoder, projector, waveform


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
        # Plumbing: the objective gets the batch's crops, lengths and clip starts (None when
        # the batch has none), with the step's key.
        config = cpu_debug.get_config()
        state = train_state.create(jax.random.PRNGKey(0), config)
        batch = {
            "audio": np.ones((4, 8160), np.float32),
            "lengths": np.full((4,), 8160, np.int32),
            "clip_starts": np.zeros((4, 8), np.int32),
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
        for name, kwarg in [("lengths", "lengths_B"), ("clip_starts", "clip_starts_BxC")]:
            np.testing.assert_array_equal(kwargs[kwarg], batch[name])
            self.assertIsNone(plain[kwarg])

    def test_eval_ranks_are_those_of_the_real_frames(self):
        # numpy on the embedding's real frames and their projection: the padding is left out.
        config = cpu_debug.get_config()
        state = train_state.create(jax.random.PRNGKey(0), config)
        lengths = np.array([8160, 5000, 8160, 3000], np.int32)
        audio = np.random.default_rng(1).standard_normal((4, 8160)).astype(np.float32)
        audio[np.arange(8160)[None, :] >= lengths[:, None]] = 0.0
        batch = {"audio": audio, "lengths": lengths}
        metrics = jax.jit(functools.partial(train_step.eval_step, config=config))(state, batch)
        frames = model.embed(state.params, audio, config.model, lengths_B=lengths)
        z = projector.apply(state.params["projector"], frames, config.model)
        valid = waveform.valid_frames(lengths, config.model)
        self.assertLess(int(valid.min()), frames.shape[1])
        for key, x in (("encoder_rank", frames), ("projected_rank", z)):
            real = [np.asarray(f[:v], np.float64) for f, v in zip(x, valid, strict=True)]
            cov = np.cov(np.concatenate(real), rowvar=False, bias=True)
            p = np.clip(np.linalg.eigvalsh(cov), 1e-30, None)
            p /= p.sum()
            np.testing.assert_allclose(metrics[key], np.exp(-np.sum(p * np.log(p))), rtol=1e-3)
        self.assertIn("loss", metrics)

    def test_eval_ranks_equal_those_of_a_separate_encoder_pass(self):
        # The eval reads the ranks off its forward pass's frames: the same numbers as the ranks
        # of `model.embed` run again on the batch, padded or not; the loss is the objective's.
        config = cpu_debug.get_config()
        state = train_state.create(jax.random.PRNGKey(0), config)
        lengths = np.array([8160, 5000, 8160, 3000], np.int32)
        audio = np.random.default_rng(1).standard_normal((4, 8160)).astype(np.float32)
        audio[np.arange(8160)[None, :] >= lengths[:, None]] = 0.0
        eval_fn = jax.jit(functools.partial(train_step.eval_step, config=config))
        eval_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)

        @jax.jit
        def separate_pass(params, audio, lengths):
            frames = model.embed(params, audio, config.model, lengths_B=lengths)
            z = projector.apply(params["projector"], frames, config.model)
            valid = jnp.full((4,), frames.shape[1])
            if lengths is not None:
                valid = waveform.valid_frames(lengths, config.model)
            ranks = train_step.ranks(frames, z, jnp.arange(frames.shape[1]) < valid[:, None])
            loss, _ = losses.objective(params, audio, eval_key, config, lengths_B=lengths)
            return {**ranks, "loss": loss}

        for batch in ({"audio": audio, "lengths": lengths}, {"audio": audio}):
            metrics = eval_fn(state, batch)
            want = separate_pass(state.params, audio, batch.get("lengths"))
            for key in ("encoder_rank", "projected_rank", "loss"):
                np.testing.assert_allclose(metrics[key], want[key], rtol=1e-6, err_msg=key)

    def test_eval_runs_the_encoder_once(self):
        # The network applications traced into the eval step, by input shape: the waveform
        # encoder once; the context encoder once over all frames (what the ranks read) and once
        # over the context frames: those of the objective alone, nothing more.
        config = cpu_debug.get_config()
        state = train_state.create(jax.random.PRNGKey(0), config)
        audio = np.zeros((4, 8160), np.float32)
        eval_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)

        def traced_calls(fn):
            calls = []

            def counting(module, name):
                apply = module.apply

                def counted(params, x, *args, **kwargs):
                    calls.append((name, x.shape))
                    return apply(params, x, *args, **kwargs)

                return counted

            with (
                mock.patch.object(waveform, "apply", counting(waveform, "waveform")),
                mock.patch.object(encoder, "apply", counting(encoder, "encoder")),
            ):
                jax.make_jaxpr(fn)(state)
            return calls

        evaluated = traced_calls(lambda s: train_step.eval_step(s, {"audio": audio}, config=config))
        alone = traced_calls(lambda s: losses.objective(s.params, audio, eval_key, config))
        num_frames, width = waveform.num_frames(8160, config.model), config.model.encoder_width
        self.assertEqual(evaluated, alone)
        self.assertEqual(evaluated[0], ("waveform", (4, 8160)))
        self.assertEqual(evaluated[1], ("encoder", (4, num_frames, width)))
        self.assertLen(evaluated, 3)
        self.assertEqual(evaluated[2][0], "encoder")
        self.assertLess(evaluated[2][1][1], num_frames)  # The context: fewer frames.

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
        # The eval's ranks over sharded batches: test_multihost's 2 hosts x 4 devices against 1.


if __name__ == "__main__":
    absltest.main()
