"""Tests of research/learning.py and the held-out-speaker probe split it uses.

The end-to-end test trains the tiny model for 2 steps on a 300-clip stand-in for the full FSDD
(the bundled sample with its takes renamed into FSDD's 0-49 scheme), so it needs no shared data.
It is marked slow: ~4 minutes on our shared 2-core machine, nearly all compilation (train step,
embedding buckets, one L-BFGS probe per feature shape). The report test covers the table and
plot fast.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest
import test_train_runner as runner
from absl.testing import absltest

from configs import cpu_debug
from research import learning
from wavlejepa import config_validation, pretrained
from wavlejepa.data import fsdd
from wavlejepa.evaluators import linear_probe

# Sample takes 0-5 -> FSDD takes: 0 (test), 5 (validation), 10-13 (train).
TAKES = {0: 0, 1: 5, 2: 10, 3: 11, 4: 12, 5: 13}
NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def fake_fsdd(directory: str) -> str:
    """The bundled sample under FSDD's take numbers (symlinks), in `directory`."""
    for name in os.listdir(fsdd.SAMPLE_DIR):
        match = NAME.match(name)
        if match:
            digit, speaker, take = match[1], match[2], TAKES[int(match[3])]
            os.symlink(
                os.path.join(fsdd.SAMPLE_DIR, name),
                os.path.join(directory, f"{digit}_{speaker}_{take}.wav"),
            )
    return directory


class HeldoutSplitTest(absltest.TestCase):
    def test_matches_a_clip_by_clip_selection(self):
        rng = np.random.default_rng(0)
        data, features, n = {"speakers": ["a", "b", "c", "d"]}, {}, 0
        for split, size in (("train", 40), ("validation", 15), ("test", 20)):
            data[split] = {"digit": rng.integers(0, 10, size), "speaker": rng.integers(0, 4, size)}
            features[split] = np.arange(n, n + size)[:, None] * np.ones((1, 3))  # Row = clip id.
            n += size
        x, y = linear_probe.heldout_speaker_splits(features, data, "c")
        # Independently: walk every clip and file it by hand.
        expected = {"train": [], "validation": [], "test": []}
        clip_id = 0
        for split in ("train", "validation", "test"):
            for speaker, digit in zip(data[split]["speaker"], data[split]["digit"], strict=True):
                if speaker == 2:
                    expected["test"].append((clip_id, digit))
                elif split != "test":
                    expected[split].append((clip_id, digit))
                clip_id += 1
        for split, pairs in expected.items():
            self.assertEqual(x[split].shape, (len(pairs), 3))
            got = sorted(zip(x[split][:, 0].astype(int).tolist(), y[split].tolist(), strict=True))
            self.assertEqual(got, sorted(pairs), split)

    def test_on_fsdd_sample(self):
        data = fsdd.load_fsdd(fsdd.fsdd_dir("sample"))
        features = {s: np.zeros((len(data[s]["audio"]), 1)) for s in fsdd.SPLITS}
        x, y = linear_probe.heldout_speaker_splits(features, data, "theo", label="speaker")
        theo = data["speakers"].index("theo")
        self.assertNotIn(theo, y["train"])
        self.assertNotIn(theo, y["validation"])
        np.testing.assert_array_equal(y["test"], np.full(60, theo))  # 10 digits x 6 takes.
        self.assertLen(x["train"], 150 - 30)
        with self.assertRaisesRegex(ValueError, "Unknown speaker"):
            linear_probe.heldout_speaker_splits(features, data, "nobody")


class HelpersTest(absltest.TestCase):
    def test_ssl_files_are_other_speakers_train_takes(self):
        with tempfile.TemporaryDirectory() as tmp:
            files = learning.ssl_files(fake_fsdd(tmp), "theo")
            every = sorted(os.listdir(tmp))
        wanted = [f for f in every if NAME.match(f)[2] != "theo" and int(NAME.match(f)[3]) >= 10]
        self.assertEqual(sorted(files), wanted)
        self.assertLen(wanted, 4 * 10 * 4)
        with self.assertRaisesRegex(ValueError, "not in"):
            learning.ssl_files(fsdd.SAMPLE_DIR, "nobody")

    def test_ssl_files_with_the_heldout_speaker_are_every_train_take(self):
        with tempfile.TemporaryDirectory() as tmp:
            files = learning.ssl_files(fake_fsdd(tmp), "theo", include_heldout=True)
            every = sorted(os.listdir(tmp))
        wanted = [f for f in every if int(NAME.match(f)[3]) >= 10]
        self.assertEqual(sorted(files), wanted)
        self.assertLen(wanted, 5 * 10 * 4)

    def test_probe_steps_and_nearest_metrics(self):
        self.assertEqual(learning.probe_steps(10, 5), [0, 5, 10])
        self.assertEqual(learning.probe_steps(12, 5), [0, 5, 10, 12])
        records = [{"step": s, "split": "train", "sigreg": s, "invariance": -s} for s in (5, 10)]
        records.append({"step": 7, "split": "eval", "loss": 1.0})
        self.assertEqual(learning.train_metrics(records, 0)["metrics_step"], 5)
        self.assertEqual(learning.train_metrics(records, 8), dict(metrics_step=10, sigreg=10,
                                                                  invariance=-10))  # fmt: skip
        self.assertTrue(np.isnan(learning.train_metrics([], 3)["sigreg"]))

    def test_runs_save_between_probes_and_keep_every_probed_step(self):
        for steps, every, saves in [(3000, 750, 250), (7500, 1500, 250), (10, 4, 2), (2, 1, 1)]:
            config = learning.training_config(
                cpu_debug.get_config(), "/tmp/run", heldout="theo", steps=steps, probe_every=every
            )
            self.assertEqual(config.checkpoint_every_steps, saves)
            self.assertEqual((config.keep_checkpoints_every, config.keep_checkpoints), (every, 1))
            config_validation.validate(config, num_devices=1, num_processes=1)

    def test_subsample_keeps_every_digit_and_speaker(self):
        data = learning.subsample(fsdd.load_fsdd(fsdd.fsdd_dir("sample")), 50)
        for split in fsdd.SPLITS:
            self.assertLessEqual(len(data[split]["audio"]), 50)
            self.assertEqual(set(data[split]["digit"]), set(range(10)))
            self.assertEqual(set(data[split]["speaker"]), set(range(5)))


class ReportTest(absltest.TestCase):
    def _probe(self, accuracy):
        return {"test_accuracy": accuracy, "validation_accuracy": 0.5, "train_accuracy": 0.9,
                "weight_decay": 1e-3}  # fmt: skip

    def test_rows_table_and_plot(self):
        results = {"mean": {t: self._probe(0.25) for t in learning.TASKS},
                   "mean_std": {t: self._probe(0.5 + 0.125 * i)
                                for i, t in enumerate(learning.TASKS)}}  # fmt: skip
        stats = {"position_share": 0.125, "clip_share": 0.5, "encoder_rank": 12.34,
                 "pooled_spread": 0.25, "pooled_participation": 2.5, "within_clip_std": 0.5,
                 "frame_sigreg": 3.0}  # fmt: skip
        metrics = {"metrics_step": 5, "sigreg": 12.5, "invariance": 0.03}
        step_row = learning.row("0 (init)", results, {**stats, "projected_rank": 7.0}, metrics)
        logmel_row = learning.row("log-mel", results, stats, {})
        self.assertEqual(
            [step_row[f"{t}_mean_std"] for t in learning.TASKS], [0.5, 0.625, 0.75]
        )  # The keys of earlier result files keep their meaning (mean pooling without suffix).
        self.assertEqual([step_row[t] for t in learning.TASKS], [0.25] * 3)
        self.assertEqual(json.loads(json.dumps(step_row))["probes"], results)
        table = learning.format_table([step_row, logmel_row]).splitlines()
        self.assertEqual(table[0].split(), ["step", "digits", "dig", "ms", "speakers", "spk", "ms",
                                            "heldout", "held", "ms", "pos", "share", "clip",
                                            "share", "enc", "rank", "z", "rank", "spread",
                                            "pooled", "PR", "in-clip", "std", "frame", "SIGReg",
                                            "sigreg", "invariance"])  # fmt: skip
        accuracies = ["0.250", "0.500", "0.250", "0.625", "0.250", "0.750"]
        health = ["0.2500", "2.50", "0.5000", "3"]
        self.assertEqual(table[1].split()[2:], accuracies + ["0.125", "0.500", "12.3", "7.0",
                                                             *health, "12.5", "0.03"])  # fmt: skip
        self.assertEqual(table[2].split()[1:], accuracies + ["0.125", "0.500", "12.3", "-",
                                                             *health, "-", "-"])  # fmt: skip
        self.assertEqual(len({len(line) for line in table}), 1)  # Columns line up.
        figure = learning.learning_curve([{"step": 0, **step_row}], logmel_row)
        lines = figure.axes[0].lines
        self.assertLen(lines, 3 * 3)  # Per task: curve, step 0, log-mel.
        # Log-mel's line is its mean_std figure.
        self.assertEqual([line.get_ydata()[0] for line in lines[2::3]], [0.5, 0.625, 0.75])

    def test_ranks_are_of_every_test_frame(self):
        rng = np.random.default_rng(0)
        frames = [rng.standard_normal((n, 6)) * [3.0, 2.0, 1.0, 1.0, 0.0, 0.0] for n in (40, 7)]
        got = learning.ranks(frames)["encoder_rank"]
        p = np.linalg.eigvalsh(np.cov(np.concatenate(frames), rowvar=False, bias=True))[2:]
        p /= p.sum()
        np.testing.assert_allclose(got, np.exp(-np.sum(p * np.log(p))), rtol=1e-4)

    def test_health_against_closed_forms(self):
        rng = np.random.default_rng(0)
        # Clip means on one line (3 * u * a fixed direction) plus frame noise of std 0.5.
        direction = np.array([0.6, 0.8, 0.0, 0.0])
        frames = {
            split: [3 * rng.uniform(-1, 1) * direction + 0.5 * rng.standard_normal((400, 4))
                    for _ in range(200)]
            for split in learning.SPLITS
        }  # fmt: skip
        got = learning.health(frames)
        pooled = np.stack([f.mean(0) for s in learning.SPLITS for f in frames[s]])
        np.testing.assert_allclose(got["pooled_spread"], pooled.std(0).mean(), rtol=1e-9)
        self.assertBetween(got["pooled_participation"], 1.0, 1.1)  # One direction: ~1.
        np.testing.assert_allclose(got["within_clip_std"], 0.5, rtol=0.02)
        # Constant frames: SIGReg's collapse value, 0.40 * N (N = 1,600 rows).
        constant = {s: [np.ones((50, 4))] * 40 for s in learning.SPLITS}
        collapsed = learning.health(constant)
        np.testing.assert_allclose(collapsed["frame_sigreg"], 0.40 * 1600, rtol=0.02)
        self.assertEqual(collapsed["pooled_spread"], 0.0)
        gaussian = {s: [rng.standard_normal((50, 4)) for _ in range(40)] for s in learning.SPLITS}
        self.assertLess(learning.health(gaussian)["frame_sigreg"], 5.0)  # Gaussian: order 1.
        self.assertBetween(learning.health(gaussian)["pooled_participation"], 3.0, 4.0)


class EndToEndTest(absltest.TestCase):
    @pytest.mark.slow
    def test_cli_trains_probes_and_reports(self):
        with tempfile.TemporaryDirectory() as tmp:
            fsdd = os.path.join(tmp, "fsdd")
            os.makedirs(fsdd)
            fake_fsdd(fsdd)
            workdir, out = os.path.join(tmp, "run"), os.path.join(tmp, "out")
            args = [
                sys.executable, "-m", "research.learning", "--config=configs/cpu_debug.py",
                "--config.dataset.eval_batches=0",  # ~8 held-out clips: too few for a batch.
                f"--workdir={workdir}", f"--fsdd_dir={fsdd}", "--heldout_speaker=theo",
                "--steps=2", "--probe_every=1", "--max_clips_per_split=100", "--probe_steps=20",
                f"--json={out}.json", f"--plot={out}.png",
            ]  # fmt: skip
            env = runner.subprocess_env(os.path.join(tmp, "cache"))
            run = subprocess.run(args, cwd=runner.REPO, env=env, capture_output=True, text=True,
                                 timeout=600, check=False)  # fmt: skip
            self.assertEqual(run.returncode, 0, run.stderr[-3000:])
            with open(f"{out}.json") as f:
                result = json.load(f)
            with open(f"{out}.png", "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            links = os.listdir(os.path.join(workdir, "ssl_audio"))
            # The run's first update has learning rate 0 (warm-up from 0), so the step-1
            # checkpoint holds exactly the params the run started from: the step-0 probe's.
            config = learning.training_config(
                cpu_debug.get_config(), workdir, heldout="theo", steps=2, probe_every=1
            )
            start = learning.initial_params(config)
            saved, _ = pretrained.load(os.path.join(workdir, "checkpoints"), 1)
            jax.tree.map(np.testing.assert_array_equal, start, saved)

        self.assertLen(links, 160)
        self.assertFalse([name for name in links if "_theo_" in name])
        lines = run.stdout.strip().splitlines()  # TFDS prints its build above the table.
        lines = lines[[line.startswith("step ") for line in lines].index(True) :]
        self.assertEqual(lines[0].split()[:4], ["step", "digits", "speakers", "heldout"])
        self.assertEqual([line[:16].strip() for line in lines[1:]],
                         ["0 (init)", "1", "2", "log-mel"])  # fmt: skip
        self.assertEqual(result["settings"]["clips"], {"train": 100, "validation": 50, "test": 50})
        self.assertEqual(result["settings"]["config_overrides"], {"dataset.eval_batches": 0})
        self.assertEqual([r["step"] for r in result["steps"]], [0, 1, 2])
        for r in result["steps"] + result["logmel"]:
            for task in learning.TASKS:
                self.assertBetween(r[task], 0.0, 1.0)
                self.assertBetween(r[f"{task}_mean_std"], 0.0, 1.0)
            for key in ("position_share", "clip_share"):
                self.assertBetween(r[key], 0.0, 1.0)
            self.assertBetween(r["encoder_rank"], 1.0, 80.0)  # <= 64 (tiny), 80 (log-mel bins).
            # Position and clip parts are orthogonal pieces of the variance.
            self.assertLessEqual(r["position_share"] + r["clip_share"], 1.0 + 1e-9)
            for results in r["probes"].values():
                for probe in results.values():
                    self.assertIn(
                        probe["weight_decay"], linear_probe.default_config().weight_decays
                    )
        for r in result["steps"]:
            self.assertBetween(r["projected_rank"], 1.0, 64.0)  # Tiny: 64-dim frames and z.
            self.assertTrue(np.isfinite(r["sigreg"]) and r["sigreg"] >= 0)
            self.assertTrue(np.isfinite(r["invariance"]) and r["invariance"] >= 0)
            self.assertEqual(r["metrics_step"], 2)  # The one logged step (the last).
        self.assertNotIn("sigreg", result["logmel"][0])
        self.assertGreater(result["logmel"][0]["digits"], 0.3)  # Log-mel: well above chance 0.1.


if __name__ == "__main__":
    absltest.main()
