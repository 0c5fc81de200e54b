"""Tests of the linear probe, its FSDD tasks, the log-mel baseline and the evaluate CLI."""

import json
import os
import subprocess
import sys
import tempfile

import chex
import jax
import ml_collections
import numpy as np
from absl.testing import absltest, parameterized

from configs import cpu_debug
from wavlejepa import evaluators, logmel, model
from wavlejepa.data import fsdd, labelled
from wavlejepa.evaluators import linear_probe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numpy_logmel(audio):
    """Independent float64 log-mel: framing, periodic Hann, rfft, HTK triangles (1127 ln)."""
    frames = 1 + (len(audio) - 400) // 160
    idx = 160 * np.arange(frames)[:, None] + np.arange(400)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    power = np.abs(np.fft.rfft(audio[idx] * window, n=512)) ** 2  # [frames, 257]
    mel = lambda hz: 1127.0 * np.log1p(hz / 700.0)
    bins_mel = mel(np.linspace(0, 8000, 257))[1:, None]
    edges = np.linspace(mel(20.0), mel(8000.0), 82)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(
        0, np.minimum((bins_mel - lower) / (centre - lower), (upper - bins_mel) / (upper - centre))
    )
    weights = np.concatenate([np.zeros((1, 80)), weights])  # DC bin unused.
    return np.log(power @ weights + 1e-6)


class LogmelTest(parameterized.TestCase):
    @parameterized.parameters(400, 401, 1000, 16_000)
    def test_matches_numpy(self, n):
        audio = np.random.default_rng(n).uniform(-0.5, 0.5, size=n)
        out = logmel.logmel(audio)
        chex.assert_shape(out, (1 + (n - 400) // 160, 80))
        np.testing.assert_allclose(out, _numpy_logmel(audio), atol=2e-3, rtol=1e-3)

    def test_short_audio_is_padded_to_one_window(self):
        audio = np.random.default_rng(0).normal(size=100)
        padded = np.concatenate([audio, np.zeros(300)])
        np.testing.assert_allclose(
            logmel.logmel(audio), _numpy_logmel(padded), atol=2e-3, rtol=1e-3
        )


class ClassifierTest(chex.TestCase):
    def test_lbfgs_reaches_the_regularised_optimum(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(120, 6)).astype(np.float32)
        y = rng.integers(0, 3, size=120)
        decays = np.array([1e-2, 1e-1, 1.0], np.float32)
        params = linear_probe.fit_softmax(x, y, decays, num_classes=3, steps=100)
        for i, wd in enumerate(decays):
            w, b = np.asarray(params["w"][i], np.float64), np.asarray(params["b"][i], np.float64)
            logits = x @ w + b
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            residual = (p - np.eye(3)[y]) / len(y)  # d(mean CE)/d(logits), in float64
            grad_w, grad_b = x.T @ residual + wd * w, residual.sum(0)
            self.assertLess(np.abs(grad_w).max(), 1e-4, f"weight_decay={wd}")
            self.assertLess(np.abs(grad_b).max(), 1e-4, f"weight_decay={wd}")
            self.assertGreater(np.abs(w).max(), 1e-3)  # Not stuck at the zero init.

    def _blobs(self, rng, n, separation):
        y = np.arange(n) % 4
        centres = separation * np.eye(8)[:4]
        return centres[y] + rng.normal(size=(n, 8)), y

    def test_separable_classes_are_learned_and_random_labels_are_not(self):
        rng = np.random.default_rng(1)
        features, labels = {}, {}
        for split, n in (("train", 200), ("validation", 80), ("test", 80)):
            features[split], labels[split] = self._blobs(rng, n, separation=6.0)
        result = linear_probe.fit_and_score(features, labels, 4, (1e-3, 1e-1), steps=100)
        self.assertEqual(result["test_accuracy"], 1.0)
        shuffled = {s: rng.permutation(v) for s, v in labels.items()}
        chance = linear_probe.fit_and_score(features, shuffled, 4, (1e-3, 1e-1), steps=100)
        self.assertLess(chance["test_accuracy"], 0.45)  # 4 classes: chance is 0.25.

    def test_weight_decay_is_chosen_on_validation_accuracy(self):
        rng = np.random.default_rng(2)
        features, labels = {}, {}
        for split, n in (("train", 40), ("validation", 200), ("test", 200)):
            features[split], labels[split] = self._blobs(rng, n, separation=1.0)
        features["train"] = np.concatenate([features["train"], rng.normal(size=(40, 30))], 1)
        for split in ("validation", "test"):
            features[split] = np.concatenate([features[split], rng.normal(size=(200, 30))], 1)
        decays = (1e-4, 1e-2, 1.0, 10.0)
        result = linear_probe.fit_and_score(features, labels, 4, decays, steps=100)
        # Recompute every decay's validation accuracy independently of the selection code.
        mean, std = features["train"].mean(0), features["train"].std(0) + 1e-8
        x = {s: ((features[s] - mean) / std).astype(np.float32) for s in features}
        params = linear_probe.fit_softmax(
            x["train"], labels["train"], np.asarray(decays, np.float32), num_classes=4, steps=100
        )
        val = [
            np.mean(np.argmax(x["validation"] @ np.asarray(w) + np.asarray(b), 1)
                    == labels["validation"])
            for w, b in zip(params["w"], params["b"], strict=True)
        ]  # fmt: skip
        self.assertGreater(max(val) - min(val), 0.02)  # The grid matters on this data.
        self.assertEqual(result["weight_decay"], decays[int(np.argmax(val))])
        self.assertAlmostEqual(result["validation_accuracy"], max(val))


class FsddTest(absltest.TestCase):
    def test_bundled_sample_splits_and_labels(self):
        data = fsdd.load_fsdd(fsdd.fsdd_dir("sample"))
        self.assertEqual(data["speakers"], ["george", "jackson", "nicolas", "theo", "yweweler"])
        sizes = {s: len(data[s]["audio"]) for s in fsdd.SPLITS}
        self.assertEqual(sizes, {"train": 150, "validation": 50, "test": 100})
        for split in fsdd.SPLITS:
            np.testing.assert_array_equal(np.bincount(data[split]["digit"], minlength=10),
                                          [sizes[split] // 10] * 10)  # fmt: skip
            np.testing.assert_array_equal(np.bincount(data[split]["speaker"], minlength=5),
                                          [sizes[split] // 5] * 5)  # fmt: skip
        # First file in name order: 0_george_0.wav (take 0: test), 8 kHz -> 16 kHz.
        import soundfile as sf

        raw, rate = sf.read(os.path.join(fsdd.SAMPLE_DIR, "0_george_0.wav"))
        self.assertEqual(rate, 8000)
        self.assertEqual(data["test"]["digit"][0], 0)
        self.assertEqual(data["test"]["speaker"][0], 0)
        self.assertLen(data["test"]["audio"][0], 2 * len(raw))

    def test_labels_task_reads_a_folder_labelled_dataset(self):
        # The bundled sample sorted into one folder per digit, built with label_from=folder: the
        # "labels" task sees each clip with its folder (= its file name's digit) as label.
        from configs import default
        from wavlejepa.data import sources

        with tempfile.TemporaryDirectory() as tmp:
            audio_dir = os.path.join(tmp, "audio")
            for name in sorted(os.listdir(fsdd.SAMPLE_DIR)):
                if name.endswith(".wav"):
                    os.makedirs(os.path.join(audio_dir, name[0]), exist_ok=True)
                    os.symlink(os.path.join(fsdd.SAMPLE_DIR, name),
                               os.path.join(audio_dir, name[0], name))  # fmt: skip
            dataset = default.get_config().dataset
            dataset.update(name="digit_folders", data_dir=os.path.join(tmp, "tfds"),
                           audio_dir=audio_dir, label_from="folder")  # fmt: skip
            sources.ensure_built(dataset)
            data = labelled.load_labelled("digit_folders", dataset.data_dir)
            self.assertEqual(data["classes"]["label"], [str(d) for d in range(10)])
            by_name = fsdd.load_fsdd(fsdd.fsdd_dir("sample"))
            digit_of = {  # Labels from the file names, by the clip's samples.
                np.asarray(a, np.float32).tobytes(): d
                for s in fsdd.SPLITS
                for a, d in zip(by_name[s]["audio"], by_name[s]["digit"], strict=True)
            }
            seen = 0
            for split in fsdd.SPLITS:
                for audio, label in zip(data[split]["audio"], data[split]["label"], strict=True):
                    self.assertEqual(digit_of[np.asarray(audio, np.float32).tobytes()], label)
                    seen += 1
            self.assertEqual(seen, 300)

            output = os.path.join(tmp, "results.json")
            run = subprocess.run(
                [sys.executable, "-m", "wavlejepa.evaluate", "--baseline=logmel", "--eval=labels",
                 "--data=digit_folders", f"--data_dir={dataset.data_dir}", f"--output={output}"],
                cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            self.assertEqual(run.returncode, 0, run.stderr[-2000:])
            with open(output) as f:
                (result,) = json.load(f)
            self.assertGreater(result["test_accuracy"], 0.6)  # 10 digits: chance 0.1.
            no_data = subprocess.run(
                [sys.executable, "-m", "wavlejepa.evaluate", "--baseline=logmel", "--eval=labels"],
                cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            self.assertEqual(no_data.returncode, 2)
            self.assertIn("needs a prepared dataset with labels", no_data.stderr)

    def test_take_split_follows_fsdd_convention(self):
        splits = [fsdd.take_split(t, 49) for t in range(50)]
        self.assertEqual(splits[:5], ["test"] * 5)
        self.assertEqual(splits[5:10], ["validation"] * 5)
        self.assertEqual(splits[10:], ["train"] * 40)


class EvaluatorTest(absltest.TestCase):
    def test_registered_and_run_by_config(self):
        self.assertIn("fsdd_digits", evaluators.names())
        self.assertIn("fsdd_speakers", evaluators.names())
        config = cpu_debug.get_config()
        config.evals.fsdd_speakers = ml_collections.ConfigDict(dict(data="sample", steps=50))
        params = model.init(jax.random.key(0), config.model)
        results = evaluators.run_all(params, config)
        self.assertEqual(
            sorted(results),
            [f"fsdd_speakers/{k}" for k in
             ("test_accuracy", "test_examples", "train_accuracy", "validation_accuracy",
              "weight_decay")],
        )  # fmt: skip
        self.assertGreater(results["fsdd_speakers/test_accuracy"], 0.3)  # Chance is 0.2.

    def test_task_config_overrides_defaults_and_rejects_typos(self):
        config = cpu_debug.get_config()
        config.evals.fsdd_digits = ml_collections.ConfigDict(dict(pooling="mean_std"))
        probe_cfg = linear_probe.task_config(config, "fsdd_digits")
        self.assertEqual(probe_cfg.pooling, "mean_std")
        self.assertEqual(probe_cfg.steps, linear_probe.default_config().steps)
        config.evals.fsdd_digits.weight_decay = 0.1  # Not a knob: weight_decays is.
        with self.assertRaisesRegex(KeyError, "weight_decay"):
            linear_probe.task_config(config, "fsdd_digits")

    def test_cli_runs_the_logmel_baseline(self):
        with tempfile.TemporaryDirectory() as tmp:
            output = os.path.join(tmp, "results.json")
            run = subprocess.run(
                [sys.executable, "-m", "wavlejepa.evaluate", "--baseline=logmel", "--json",
                 "--eval=fsdd_digits,fsdd_speakers", "--data=sample", f"--output={output}"],
                cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            self.assertEqual(run.returncode, 0, run.stderr[-2000:])
            with open(output) as f:
                results = json.load(f)
        self.assertEqual([r["eval"] for r in results], ["fsdd_digits", "fsdd_speakers"])
        self.assertEqual([json.loads(line) for line in run.stdout.splitlines()], results)
        # Log-mel through the probe on the sample, measured: digits 0.87, speakers 0.99.
        self.assertGreater(results[0]["test_accuracy"], 0.7)  # Chance 0.1.
        self.assertGreater(results[1]["test_accuracy"], 0.8)  # Chance 0.2.


if __name__ == "__main__":
    absltest.main()
