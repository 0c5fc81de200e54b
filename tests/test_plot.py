"""Tests of wavlejepa/plot.py on a synthetic metrics.jsonl and a tiny checkpoint."""

import json
import os
import shutil
import tempfile

import jax
import numpy as np
from absl.testing import absltest
from matplotlib import image

from configs import cpu_debug
from wavlejepa import checkpointing, model, plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(path, steps=60, eval_every=20):
    """Train records every step, eval records (with probe accuracies) every eval_every steps."""
    rng = np.random.default_rng(0)
    records = []
    for step in range(1, steps + 1):
        records.append({"step": step, "split": "train", "loss": 3.0 / step,
                        "invariance": 2.0 / step, "sigreg": 450 + 100 * rng.normal(),
                        "learning_rate": 1e-3 * min(1.0, step / 10)})  # fmt: skip
        if step % eval_every == 0:
            records.append({"step": step, "split": "eval", "eval_loss": 3.1 / step,
                            "eval_invariance": 2.1 / step, "eval_sigreg": 470.0,
                            "eval_fsdd_digits/test_accuracy": 0.2 + step / 100,
                            "eval_fsdd_digits/weight_decay": 0.01})  # fmt: skip
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.write('{"step": 61, "split": "tr')  # A line cut short by a kill.
    return records


def _assert_png(test, path):
    with open(path, "rb") as f:
        test.assertEqual(f.read(8), PNG_MAGIC)
    pixels = image.imread(path)
    test.assertEqual(pixels.ndim, 3)
    test.assertGreater(pixels.std(), 0.01)  # Not a blank canvas.
    return pixels


class PlotTest(absltest.TestCase):
    def setUp(self):
        super().setUp()
        self.workdir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.workdir)

    def test_curves_hold_the_logged_values(self):
        records = _write_metrics(os.path.join(self.workdir, "metrics.jsonl"))
        loaded = plot.load_metrics(os.path.join(self.workdir, "metrics.jsonl"))
        self.assertEqual(loaded, records)  # The cut-short line is dropped.
        # The run's config in its workdir sets SIGReg's lines: cpu_debug's 8 crops x 50 frames
        # collapse at 0.40 * 400 = 160 and warn at 0.25 of that.
        config = cpu_debug.get_config()
        with open(os.path.join(self.workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort())
        marks = plot.sigreg_lines(plot.load_run_config(self.workdir))
        np.testing.assert_allclose(list(marks.values()), [160.0, 40.0], rtol=1e-6)
        self.assertEqual(plot.sigreg_lines(None), {})
        fig = plot.training_curves(loaded, marks)
        loss_ax, _, sigreg_ax, lr_ax, probe_ax = fig.axes
        train_sigreg = [r["sigreg"] for r in records if "sigreg" in r]
        np.testing.assert_allclose(sigreg_ax.lines[0].get_ydata(), train_sigreg)
        np.testing.assert_allclose(loss_ax.lines[1].get_xdata(), [20, 40, 60])  # eval dots
        np.testing.assert_allclose([sigreg_ax.lines[i].get_ydata()[0] for i in (2, 3)], [160, 40])
        np.testing.assert_allclose(lr_ax.lines[0].get_ydata()[-1], 1e-3)
        self.assertEqual(plot.probe_keys(loaded), ["eval_fsdd_digits/test_accuracy"])
        np.testing.assert_allclose(probe_ax.lines[0].get_ydata(), [0.4, 0.6, 0.8])

    def test_make_plots_writes_a_valid_png(self):
        _write_metrics(os.path.join(self.workdir, "metrics.jsonl"))
        out = os.path.join(self.workdir, "plots")
        paths = plot.make_plots(self.workdir, out)
        self.assertEqual(paths, [os.path.join(out, "training_curves.png")])
        height, width, _ = _assert_png(self, paths[0]).shape
        self.assertEqual((height, width), (round(3.4 * 110), 16 * 110))

    def test_pca_matches_the_covariance_eigenvectors(self):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(200, 5)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.1]) + 7.0
        points = plot.pca_2d(x)
        eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x.T))
        top = eigenvectors[:, np.argsort(eigenvalues)[::-1][:2]]
        expected = (x - x.mean(0)) @ top
        for k in range(2):  # Each component is defined up to its sign.
            sign = np.sign(points[:, k] @ expected[:, k])
            np.testing.assert_allclose(points[:, k], sign * expected[:, k], atol=1e-8)

    def test_embedding_plot_from_a_checkpoint(self):
        _write_metrics(os.path.join(self.workdir, "metrics.jsonl"))
        config = cpu_debug.get_config()
        params = model.init(jax.random.key(0), config.model)
        mngr = checkpointing.best_manager(self.workdir, config)
        checkpointing.save_best(mngr, 10, params, config, eval_loss=1.0)
        mngr.wait_until_finished()
        mngr.close()
        paths = plot.make_plots(self.workdir, checkpoint=self.workdir, data="sample")
        self.assertEqual([os.path.basename(p) for p in paths],
                         ["training_curves.png", "embeddings_pca.png"])  # fmt: skip
        _assert_png(self, paths[1])
        # A model folder without training curves (import_wavjepa's): the PCA alone.
        os.remove(os.path.join(self.workdir, "metrics.jsonl"))
        with self.assertRaisesRegex(FileNotFoundError, "--checkpoint alone"):
            plot.make_plots(self.workdir, checkpoint=self.workdir)
        out = os.path.join(self.workdir, "pca_only")
        paths = plot.make_plots("", out, checkpoint=self.workdir, data="sample")
        self.assertEqual(paths, [os.path.join(out, "embeddings_pca.png")])


if __name__ == "__main__":
    absltest.main()
