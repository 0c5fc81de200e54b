"""research/segment_probe.py: K segment means in order, K = 1 as mean pooling, and the probes
on them; research/segment_compare.py: gains over the init with the same K, across seeds."""

import json
import os
import tempfile

import chex
import numpy as np
from absl.testing import absltest, parameterized

from research import anchor_compare, learning, segment_compare, segment_probe
from wavlejepa.data import fsdd
from wavlejepa.evaluators import linear_probe


class SegmentPoolTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.frames = np.random.default_rng(0).normal(size=(7, 3))

    def test_tiles_the_clip_in_order(self):
        # T = 7, K = 3: stretches [0, 2), [2, 4), [4, 7) (floor of 7/3, 14/3, 21/3).
        got = segment_probe.segment_pool(self.frames, 3)
        f = self.frames
        expected = np.concatenate([f[0:2].mean(0), f[2:4].mean(0), f[4:7].mean(0)])
        chex.assert_shape(got, (9,))
        np.testing.assert_allclose(got, expected, rtol=1e-12)

    def test_one_segment_is_mean_pooling(self):
        np.testing.assert_array_equal(
            segment_probe.segment_pool(self.frames, 1), linear_probe.pool(self.frames, "mean")
        )

    def test_as_many_segments_as_frames_lists_the_frames(self):
        np.testing.assert_array_equal(
            segment_probe.segment_pool(self.frames, 7), self.frames.reshape(-1)
        )

    def test_a_clip_shorter_than_k_repeats_frames(self):
        # T = 2, K = 4: stretch i is frame floor(i / 2): 0, 0, 1, 1.
        f = self.frames[:2]
        np.testing.assert_array_equal(
            segment_probe.segment_pool(f, 4), np.concatenate([f[0], f[0], f[1], f[1]])
        )

    def test_order_matters(self):
        # Mean pooling cannot tell a clip from its reverse; two segments can.
        np.testing.assert_allclose(
            linear_probe.pool(self.frames, "mean"), linear_probe.pool(self.frames[::-1], "mean")
        )
        self.assertFalse(
            np.allclose(
                segment_probe.segment_pool(self.frames, 2),
                segment_probe.segment_pool(self.frames[::-1], 2),
            )
        )

    @parameterized.parameters(((0, 3), 2), ((4, 3), 0))
    def test_no_frames_or_no_segments_raise(self, shape, segments):
        with self.assertRaisesRegex(ValueError, "needs frames and segments >= 1"):
            segment_probe.segment_pool(np.zeros(shape), segments)


class ProbesTest(absltest.TestCase):
    def test_one_segment_gives_learning_mean_probes(self):
        # The bundled FSDD sample cut into 100-sample "frames": K = 1 must score as
        # research.learning's mean pooling, task for task.
        data = learning.subsample(fsdd.load_fsdd(fsdd.SAMPLE_DIR), 40)
        heldout = data["speakers"][0]
        frames = {
            s: [np.asarray(a[: len(a) // 100 * 100]).reshape(-1, 100) for a in data[s]["audio"]]
            for s in learning.SPLITS
        }
        probe_cfg = linear_probe.default_config()
        probe_cfg.steps = 20
        got = segment_probe.probes(frames, data, heldout, probe_cfg, 1)
        expected = learning.probes(frames, data, heldout, probe_cfg)["mean"]
        for task in learning.TASKS:
            self.assertEqual(got[task]["test_accuracy"], expected[task]["test_accuracy"])
            self.assertEqual(got[task]["weight_decay"], expected[task]["weight_decay"])


class ModelsTest(absltest.TestCase):
    def test_a_missing_snapshot_names_the_ones_there(self):
        workdir = self.enter_context(tempfile.TemporaryDirectory())
        os.makedirs(os.path.join(workdir, "snapshots"))
        open(os.path.join(workdir, "snapshots", "step_000000.npz"), "w").close()
        with self.assertRaisesRegex(ValueError, r"step_000750.npz is missing.*step_000000.npz"):
            list(segment_probe.models(workdir, [750], base_config=None))


def segment_result(accuracies: dict) -> dict:
    """A segment_probe result: {step: {K: {task: accuracy}}} -> its JSON form."""
    return {"steps": {str(step): {str(k): {t: {"test_accuracy": a} for t, a in by_task.items()}
                                  for k, by_task in by_k.items()}
                      for step, by_k in accuracies.items()}}  # fmt: skip


class SegmentCompareTest(absltest.TestCase):
    def test_gain_over_the_same_k_at_init_mean_and_spread_over_seeds(self):
        tasks = segment_compare.TASKS
        acc = lambda d, h, s: dict(zip(tasks, (d, h, s), strict=True))
        seeds = {  # step 0 and 750, K 1 and 4.
            0: {0: {1: acc(0.6, 0.4, 0.9), 4: acc(0.7, 0.5, 0.9)},
                750: {1: acc(0.7, 0.5, 0.9), 4: acc(0.8, 0.5, 0.95)}},
            1: {0: {1: acc(0.6, 0.4, 0.9), 4: acc(0.6, 0.6, 0.9)},
                750: {1: acc(0.6, 0.3, 0.9), 4: acc(0.8, 0.5, 0.9)}},
        }  # fmt: skip
        folder = self.enter_context(tempfile.TemporaryDirectory())
        for seed, accuracies in seeds.items():
            with open(os.path.join(folder, f"ours_750steps_seed{seed}.json"), "w") as f:
                json.dump(segment_result(accuracies), f)
        rows = segment_compare.summary(anchor_compare.load(folder))
        self.assertEqual([(r["system"], r["steps"], r["segments"]) for r in rows],
                         [("ours", 750, 1), ("ours", 750, 4)])  # fmt: skip
        k4 = rows[1]
        # Seed gains with K = 4: digits 0.1 and 0.2, unseen speaker 0.0 and -0.1.
        self.assertAlmostEqual(k4["digits_gain"], 0.15)
        self.assertAlmostEqual(k4["digits_spread"], 0.1)
        self.assertAlmostEqual(k4["heldout_digits_gain"], -0.05)
        self.assertAlmostEqual(k4["heldout_digits_spread"], 0.1)
        self.assertAlmostEqual(k4["speakers_final"], 0.925)
        self.assertAlmostEqual(rows[0]["heldout_digits_gain"], 0.0)
        table = segment_compare.markdown(rows).splitlines()
        self.assertLen(table, 4)
        self.assertEqual(table[3].count("|"), table[0].count("|"))
        self.assertIn("| ours | 750 | 0,1 | 4 | +0.150 (0.100) | 0.650 → 0.800 |", table[3])

    def test_best_row_takes_the_best_of_mean_mean_std_and_every_k(self):
        tasks = segment_compare.TASKS
        acc = lambda d: {t: d for t in tasks}
        segments = {
            0: {
                "steps": segment_result(
                    {0: {1: acc(0.5), 4: acc(0.6)}, 750: {1: acc(0.5), 4: acc(0.9)}}
                )["steps"]
            }
        }
        row = lambda step, mean, mean_std: {
            "step": step,
            **{t: mean for t in tasks},
            **{f"{t}_mean_std": mean_std for t in tasks},
        }
        learned = {0: {"steps": [row(0, 0.5, 0.7), row(250, 0.1, 0.1), row(750, 0.5, 0.8)]}}
        rows = segment_compare.summary({("ours", 750): segments}, {("ours", 750): learned})
        best = rows[-1]
        self.assertEqual(best["segments"], "best")
        # Step 0: max(0.5, 0.7, 0.5, 0.6) = 0.7; step 750: max(0.5, 0.8, 0.5, 0.9) = 0.9.
        self.assertAlmostEqual(best["digits_init"], 0.7)
        self.assertAlmostEqual(best["digits_gain"], 0.2)
        learned[0]["steps"] = learned[0]["steps"][:2]  # Its last step is 250: another run.
        with self.assertRaisesRegex(ValueError, r"steps \(0, 250\) are not the segment file's"):
            segment_compare.summary({("ours", 750): segments}, {("ours", 750): learned})

    def test_a_learning_result_file_is_refused(self):
        runs = {("ours", 750): {0: {"steps": [{"step": 0}]}}}
        with self.assertRaisesRegex(ValueError, "not of research.segment_probe"):
            segment_compare.summary(runs)


if __name__ == "__main__":
    absltest.main()
