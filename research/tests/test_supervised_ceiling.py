"""Tests of research/supervised_ceiling.py: its batches, pooling and loss against numpy, that its
step learns, and one short run on the bundled FSDD sample under FSDD's take numbers."""

import os
import tempfile

import chex
import jax
import numpy as np
from absl.testing import absltest
from test_learning import NAME, fake_fsdd

from configs import cpu_debug
from research import learning, supervised_ceiling
from wavlejepa import model
from wavlejepa.data import fsdd
from wavlejepa.nets import waveform


def tiny_config():
    config = cpu_debug.get_config()
    config.dataset.crop_seconds = 0.2  # 3,200 samples: 19 frames of the tiny model.
    return config


class BatchTest(absltest.TestCase):
    def test_crops_are_pieces_of_their_clips_normalised(self):
        rng = np.random.default_rng(0)
        clips = [rng.normal(size=n).astype(np.float32) for n in (500, 1000, 2500)]
        audio, lengths = supervised_ceiling.crop_batch(np.random.default_rng(1), clips, 1000)
        chex.assert_shape(audio, (3, 1000))
        np.testing.assert_array_equal(lengths, [500, 1000, 1000])
        np.testing.assert_array_equal(audio[0, 500:], 0.0)  # Padding stays silent.
        for row, clip in enumerate(clips):
            real = audio[row, : lengths[row]].astype(np.float64)
            np.testing.assert_allclose([real.mean(), real.var()], [0.0, 1.0], atol=1e-4)
            # Some window of the clip, normalised by numpy, is exactly this crop.
            errors = []
            for start in range(len(clip) - lengths[row] + 1):
                w = clip[start : start + lengths[row]].astype(np.float64)
                errors.append(np.max(np.abs((w - w.mean()) / np.sqrt(w.var() + 1e-5) - real)))
            self.assertLess(min(errors), 1e-5)

    def test_labelled_clips_are_the_heldout_probes_train_split(self):
        with tempfile.TemporaryDirectory() as tmp:
            data = fsdd.load_fsdd(fake_fsdd(tmp))
            names = sorted(n for n in os.listdir(tmp) if NAME.match(n))
        clips, digits = supervised_ceiling.labelled_clips(data, "theo")
        # By hand: the other four speakers' train takes (10-13 here), in file-name order.
        wanted = [n for n in names if NAME.match(n)[2] != "theo" and int(NAME.match(n)[3]) >= 10]
        self.assertLen(clips, len(wanted))
        np.testing.assert_array_equal(digits, [int(n[0]) for n in wanted])
        by_length = {len(a) for a in data["train"]["audio"]}
        self.assertTrue({len(c) for c in clips} <= by_length)


class LossTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.config = tiny_config()
        self.params = supervised_ceiling.trainable(
            learning.initial_params(self.config), self.config.model.encoder_width
        )
        rng = np.random.default_rng(2)
        self.head = {"kernel": rng.normal(size=(self.config.model.encoder_width, 10)) * 0.3,
                     "bias": rng.normal(size=10)}  # fmt: skip
        self.params["head"] = jax.tree.map(lambda x: np.asarray(x, np.float32), self.head)
        clips = [rng.normal(size=n).astype(np.float32) for n in (3200, 1800, 2600, 3200)]
        self.audio, self.lengths = supervised_ceiling.crop_batch(rng, clips, 3200)
        self.digits = np.array([3, 0, 9, 3], np.int32)

    def test_pooled_is_the_mean_of_the_real_frames(self):
        cfg = self.config.model
        frames = np.asarray(model.embed(self.params["encoder"], self.audio, cfg,
                                        lengths_B=self.lengths), np.float64)  # fmt: skip
        valid = [waveform.num_frames(int(n), cfg) for n in self.lengths]
        expected = np.stack([f[:v].mean(axis=0) for f, v in zip(frames, valid, strict=True)])
        got = supervised_ceiling.pooled(self.params["encoder"], self.audio, self.lengths, cfg)
        chex.assert_shape(got, (4, cfg.encoder_width))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        self.assertLess(valid[1], frames.shape[1])  # A padded crop was in the batch.

    def test_loss_and_accuracy_match_numpy(self):
        cfg = self.config.model
        x = np.asarray(supervised_ceiling.pooled(self.params["encoder"], self.audio, self.lengths,
                                                 cfg), np.float64)  # fmt: skip
        logits = x @ self.head["kernel"] + self.head["bias"]
        log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))[:, None]
        log_p -= logits.max(1, keepdims=True)
        expected = -log_p[np.arange(4), self.digits].mean()
        loss, accuracy = supervised_ceiling.loss_fn(self.params, self.audio, self.lengths,
                                                    self.digits, cfg)  # fmt: skip
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        self.assertEqual(accuracy, np.mean(logits.argmax(1) == self.digits))

    def test_steps_lower_the_loss_on_a_fixed_batch(self):
        config = self.config
        config.total_steps, config.optimizer.warmup_steps = 10, 1
        config.optimizer.peak_lr = 1e-2
        params = supervised_ceiling.trainable(
            learning.initial_params(config), config.model.encoder_width
        )
        optimizer, step = supervised_ceiling.make_step(config)
        opt_state, losses = optimizer.init(params), []
        for _ in range(10):
            params, opt_state, loss, _ = step(params, opt_state, self.audio, self.lengths,
                                              self.digits)  # fmt: skip
            losses.append(float(loss))
        np.testing.assert_allclose(losses[0], np.log(10), rtol=1e-6)  # A zero head: uniform.
        self.assertLess(losses[-1], 0.5 * losses[0])
        # Only the encoders and the head are trained: the predictor is not in the tree.
        self.assertEqual(set(params["encoder"]), {"waveform_encoder", "context_encoder"})


class RunTest(absltest.TestCase):
    def test_short_run_reports_every_probed_step(self):
        config = tiny_config()
        with tempfile.TemporaryDirectory() as tmp:
            result = supervised_ceiling.run(
                config, fsdd_dir=fake_fsdd(tmp), heldout="theo", steps=2, probe_every=1,
                probe_steps_lbfgs=10,
            )  # fmt: skip
        rows = result["steps"]
        self.assertEqual([r["step"] for r in rows], [0, 1, 2])
        # A zero head predicts digit 0 for every clip: theo says each digit 6 times.
        self.assertEqual(rows[0]["head"], 0.1)
        self.assertIsNone(rows[0]["train_loss"])
        np.testing.assert_allclose(rows[1]["train_loss"], np.log(10), rtol=1e-6)
        for r in rows:
            for key in (*learning.TASKS, "heldout_digits_mean_std", "head"):
                self.assertBetween(r[key], 0.0, 1.0)
        self.assertEqual(result["settings"]["train_clips"], 4 * 10 * 4)
        table = learning.format_table(rows, supervised_ceiling.COLUMNS).splitlines()
        self.assertEqual(table[0].split()[-5:], ["head", "train", "loss", "train", "acc"])
        self.assertEqual(len({len(line) for line in table}), 1)  # Columns line up.
        self.assertEqual(table[1].split()[-3:], ["0.100", "-", "-"])


if __name__ == "__main__":
    absltest.main()
