"""The run's closing summary: the verdict against the eval spread, and the next commands."""

import json
import math
import tempfile

from absl.testing import absltest
from etils import epath

from wavlejepa import reporting, summary


def _write_evals(workdir: epath.Path, records: list[dict]) -> None:
    rows = [{"step": 5, "split": "train", "loss": 1.0}] + [dict(split="eval", **r) for r in records]
    (workdir / reporting.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))


class SummaryTest(absltest.TestCase):
    def test_a_fall_far_beyond_the_spread_is_a_help(self):
        first = {"step": 0, "eval_loss": 6.8, "eval_loss_sem": 0.03}
        last = {"step": 100, "eval_loss": 1.3, "eval_loss_sem": 0.04}
        verdict = summary.loss_verdict(first, last)
        ratio = 5.5 / math.sqrt(0.03**2 + 0.04**2)  # 110 standard errors.
        self.assertTrue(verdict.startswith("Training helped"), verdict)
        self.assertIn(f"({ratio:.0f} standard errors)", verdict)
        self.assertIn("from 6.800 ± 0.030 to 1.300 ± 0.040", verdict)

    def test_a_change_within_the_spread_is_no_verdict(self):
        first = {"step": 0, "eval_loss": 2.00, "eval_loss_sem": 0.1}
        last = {"step": 10, "eval_loss": 1.80, "eval_loss_sem": 0.1}
        verdict = summary.loss_verdict(first, last)
        self.assertTrue(verdict.startswith("No clear change"), verdict)
        self.assertIn(f"within {0.2 / math.sqrt(0.02):.1f} standard errors", verdict)

    def test_a_rise_is_a_hurt(self):
        first = {"step": 0, "eval_loss": 1.0, "eval_loss_sem": 0.01}
        last = {"step": 10, "eval_loss": 2.0, "eval_loss_sem": 0.01}
        self.assertTrue(summary.loss_verdict(first, last).startswith("Training hurt"))

    def test_lines_name_the_paths_and_the_probe_noise(self):
        workdir = epath.Path(self.enter_context(tempfile.TemporaryDirectory()))
        probe = "eval_fsdd_digits/test_accuracy"
        _write_evals(
            workdir,
            [
                {"step": 0, "eval_loss": 6.8, "eval_loss_sem": 0.03, probe: 0.44},
                {"step": 50, "eval_loss": 3.0, "eval_loss_sem": 0.03, probe: 0.46},
                {
                    "step": 100,
                    "eval_loss": 1.3,
                    "eval_loss_sem": 0.04,
                    probe: 0.48,
                    "eval_fsdd_digits/test_examples": 50,
                },
            ],
        )
        text = "\n".join(summary.lines(str(workdir), "/data/clips"))
        self.assertIn(f"checkpoints in {workdir / 'checkpoints'}", text)
        self.assertIn("at step 0: 6.800 ± 0.030; at step 100: 1.300 ± 0.040", text)
        sem = math.sqrt(0.48 * 0.52 / 50) * math.sqrt(2)  # 0.100: a 0.04 change is noise.
        self.assertIn(f"0.440 -> 0.480 on 50 clips (a change's standard error: {sem:.3f}", text)
        self.assertIn("too few clips to tell", text)
        self.assertIn(f"--checkpoint={workdir} --input=/data/clips", text)
        self.assertIn(f"--output={workdir / 'embeddings.npz'}", text)

    def test_a_run_without_evals_still_says_where_it_is(self):
        workdir = self.enter_context(tempfile.TemporaryDirectory())
        text = "\n".join(summary.lines(workdir))
        self.assertIn("checkpoints in", text)
        self.assertIn("--input=YOUR_AUDIO_DIR", text)
        self.assertNotIn("Held-out", text)


if __name__ == "__main__":
    absltest.main()
