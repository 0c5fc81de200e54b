"""Tests of wavlejepa/embedding.py and its CLI (embed.py): windows, timestamps, normalisation,
recompiles, checkpoints."""

import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

import chex
import jax
import numpy as np
import scipy.signal
import soundfile as sf
from absl.testing import absltest, parameterized

from configs import cpu_debug
from wavlejepa import checkpointing, embedding, model
from wavlejepa.nets import waveform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
    return cpu_debug.get_config()  # tiny model, 0.51 s crops -> 50-frame windows


def _normalised(x):
    """Independent of the package: float64 zero mean / unit variance, eps 1e-5."""
    x = np.asarray(x, np.float64)
    return ((x - x.mean()) / np.sqrt(x.var() + 1e-5)).astype(np.float32)


def _run_embed(*flags):
    """The embed CLI with `flags`, from the repo root: the finished process (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "wavlejepa.embed", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def save_checkpoint(workdir, config, params):
    """A finished best/ checkpoint, as the trainer writes it."""
    mngr = checkpointing.best_manager(workdir, config)
    checkpointing.save_best(mngr, 7, params, config, eval_loss=1.0)
    mngr.wait_until_finished()
    mngr.close()


class GeometryTest(parameterized.TestCase):
    def test_receptive_field_and_hop_match_the_conv_stack(self):
        cfg = _config().model
        self.assertEqual(waveform.hop_samples(cfg), 160)
        self.assertEqual(waveform.receptive_samples(cfg), 240)
        for frames in (1, 2, 7, 50, 200):
            n = waveform.samples_for_frames(frames, cfg)
            self.assertEqual(waveform.num_frames(n, cfg), frames)
            if frames > 1:  # One sample fewer loses exactly one frame.
                self.assertEqual(waveform.num_frames(n - 1, cfg), frames - 1)
            else:
                with self.assertRaises(ValueError):
                    waveform.num_frames(n - 1, cfg)

    @parameterized.parameters(1, 239, 240, 241, 1000, 8079, 8080, 8240, 8241, 20_000, 40_321)
    def test_windows_give_every_frame_once_in_order(self, num_samples):
        cfg = _config().model
        buckets = [7, 13, 25, 50]
        windows = embedding.plan_windows(num_samples, 50, buckets, cfg)
        expected = (num_samples - 240) // 160 + 1 if num_samples >= 240 else 1
        frames = []
        for w in windows:
            self.assertIn(w.bucket_frames, buckets)
            self.assertLessEqual(w.stop, num_samples)
            # Every sample of the window's span, up to where a next frame would start.
            full = embedding.window_samples(w.bucket_frames, cfg)
            self.assertEqual(w.stop - w.start, min(num_samples - w.start, full))
            self.assertEqual(waveform.num_frames(full, cfg), w.bucket_frames)
            self.assertEqual(waveform.num_frames(full + 1, cfg), w.bucket_frames + 1)
            self.assertLessEqual(w.keep_to, w.valid_frames)
            # Local frame k of the window starts at sample start + 160 k in the clip.
            self.assertEqual(w.start % 160, 0)
            frames += [w.start // 160 + k for k in range(w.keep_from, w.keep_to)]
        self.assertEqual(frames, list(range(expected)))

    def test_frame_times_are_centres_and_never_past_the_end(self):
        cfg = _config().model
        t = embedding.frame_times(5, 1000, cfg)
        np.testing.assert_allclose(t, [0.0075, 0.0175, 0.0275, 0.0375, 0.0475])
        self.assertEqual(embedding.frame_times(1, 100, cfg)[0], 50 / 16000)


class EmbedderTest(chex.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.config = _config()
        cls.embedder = embedding.Embedder.random_init(cls.config, seed=3, batch_size=4)
        cls.rng = np.random.default_rng(0)

    def _reference(self, audio):
        """model.embed of one whole window, normalised independently."""
        return np.asarray(model.embed(self.embedder.params, _normalised(audio)[None],
                                      self.config.model))[0]  # fmt: skip

    def test_one_full_window_matches_model_embed(self):
        audio = self.rng.normal(size=8080)  # Exactly 50 frames: no padding.
        out = self.embedder.embed_one(audio)
        chex.assert_shape(out.frames, (50, 64))
        np.testing.assert_allclose(out.frames, self._reference(audio), atol=2e-5)
        np.testing.assert_allclose(out.clip, out.frames.mean(0), atol=1e-6)

    def test_long_audio_is_stitched_from_windows(self):
        audio = self.rng.normal(size=20_000)  # 124 frames: windows at 0, 50 and 74 (end-aligned).
        out = self.embedder.embed_one(audio)
        chex.assert_shape(out.frames, (124, 64))
        # Each window: 8,239 samples (every sample before a 51st frame would start), or to the end.
        span = embedding.window_samples(50, self.config.model)
        self.assertEqual(span, 8239)
        np.testing.assert_allclose(out.frames[:50], self._reference(audio[:span]), atol=2e-5)
        np.testing.assert_allclose(out.frames[50:100],
                                   self._reference(audio[8000:8000 + span]), atol=2e-5)  # fmt: skip
        last = self._reference(audio[74 * 160 :])
        np.testing.assert_allclose(out.frames[100:], last[26:], atol=2e-5)
        np.testing.assert_allclose(out.timestamps, (160 * np.arange(124) + 120) / 16000)
        self.assertLessEqual(out.timestamps[-1], 20_000 / 16000)

    def test_short_audio_ignores_padding_in_attention(self):
        audio = self.rng.normal(size=3000)  # 18 frames, padded to the 25-frame bucket.
        out = self.embedder.embed_one(audio)
        chex.assert_shape(out.frames, (18, 64))
        params, cfg = self.embedder.params, self.config.model
        # The model on the 3,000 real samples alone (18 frames): what ignoring the padding in
        # the front end's norm and in attention must give.
        ref = model.embed(params, _normalised(audio)[None].astype(np.float32), cfg)[0]
        chex.assert_shape(ref, (18, 64))
        np.testing.assert_allclose(out.frames, ref, atol=2e-5)

    def test_progress_moves_by_batches_of_windows_within_one_long_clip(self):
        class Bar:  # The tqdm members the Embedder uses, recorded.
            def __init__(self):
                self.total, self.steps = None, []

            def refresh(self):
                pass

            def update(self, n):
                self.steps.append(n)

        bar = Bar()
        audio = np.random.default_rng(0).normal(size=40_000)  # 249 frames: 5 windows of 50.
        windows = embedding.plan_windows(40_000, 50, self.embedder.buckets, self.config.model)
        self.assertEqual(len(windows), 5)
        self.embedder.embed([audio], progress=bar)
        self.assertEqual(bar.total, 5)
        self.assertEqual(bar.steps, [4, 1])  # batch_size 4: the bar moves before the clip ends.

    def test_resamples_to_16k(self):
        audio8k = self.rng.normal(size=4000)
        out = self.embedder.embed_one(audio8k, sample_rate=8000)
        ref = self.embedder.embed_one(scipy.signal.resample_poly(audio8k, 2, 1))
        chex.assert_shape(out.frames, ((8000 - 240) // 160 + 1, 64))
        np.testing.assert_allclose(out.frames, ref.frames, atol=1e-6)

    def test_a_sample_rate_that_is_not_a_whole_number_of_hz_is_named_with_its_range(self):
        for rate in (0, -16_000, 0.5, float("nan")):  # scipy said "up and down must be >= 1".
            with self.assertRaisesRegex(ValueError, rf"sample_rate={rate!r}: .* whole number >= 1"):
                self.embedder.embed_one(np.ones(1000), sample_rate=rate)
        ref = self.embedder.embed_one(np.ones(1000), sample_rate=8000)
        np.testing.assert_array_equal(
            self.embedder.embed_one(np.ones(1000), sample_rate=8000.0).frames, ref.frames
        )

    def test_the_usual_wrong_inputs_name_the_fix(self):
        stereo = self.rng.normal(size=(4000, 2))
        for clips, phrase in (
            (stereo, r"shape \(4000, 2\), multichannel .* embed\(\[audio.mean\(axis=1\)\]\)"),
            ([stereo], r"Sound 0 has shape \(4000, 2\): .* downmix .* audio.mean\(axis=1\)"),
            (stereo[:, 0], r"not one array of shape \(4000,\): wrap it in a list"),
            ("clips/a.wav", r"not a path \('clips/a.wav'\): use embedding.embed_files"),
            ([np.ones(500), "a.wav"], r"Sound 1 is a path \('a.wav'\), not audio: use embed"),
        ):
            with self.assertRaisesRegex(ValueError, phrase):
                self.embedder.embed(clips)
        batch = self.rng.normal(size=(3, 4000))  # [clips, samples]: rows are clips, as before.
        self.assertLen(self.embedder.embed(batch), 3)

    def test_a_clip_shorter_than_a_frame_is_named_with_the_minimum(self):
        for n, rate in ((1, 16_000), (100, 16_000), (239, 16_000), (100, 8000)):
            with self.assertRaisesRegex(
                ValueError, rf"Sound 1 lasts .*\({n} samples at {rate} Hz\), shorter than one "
                r"frame of the model \(240 samples at 16000 Hz = 15 ms\): leave it out or pad"
            ):  # fmt: skip
                self.embedder.embed([np.ones(rate), self.rng.normal(size=n)], rate)
        chex.assert_shape(self.embedder.embed_one(self.rng.normal(size=240)).frames, (1, 64))
        padded = self.embedder.embed([self.rng.normal(size=100)], pad_short=True)  # HEAR's way.
        chex.assert_shape(padded[0].frames, (1, 64))

    def test_a_clip_does_not_depend_on_its_batch(self):
        clips = [self.rng.normal(size=n) for n in (700, 3000, 12_345, 3100, 250)]
        together = self.embedder.embed(clips)
        for clip, out in zip(clips, together, strict=True):
            alone = self.embedder.embed_one(clip)
            np.testing.assert_allclose(out.frames, alone.frames, atol=1e-5)
            np.testing.assert_array_equal(out.timestamps, alone.timestamps)

    def test_new_lengths_do_not_recompile(self):
        chex.clear_trace_counter()
        counted = jax.jit(
            chex.assert_max_traces(embedding.embed_windows, n=4), static_argnames="cfg"
        )
        fresh = embedding.Embedder.random_init(self.config, seed=3, batch_size=2)
        with mock.patch.object(embedding, "_embed_windows_jit", counted):
            # 14 lengths over all 4 buckets and several windows: at most one trace per bucket.
            lengths = [250, 900, 1500, 2100, 2500, 3000, 3999, 4100, 6000, 8080, 9000, 17_000,
                       30_001, 7777]  # fmt: skip
            for n in lengths:
                fresh.embed_one(self.rng.normal(size=n))

    def test_replicated_params_are_used_from_one_device(self):
        mesh = jax.sharding.Mesh(jax.devices(), ("data",))
        replicated = jax.device_put(
            self.embedder.params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        )
        e = embedding.Embedder(replicated, self.config.model, window_seconds=0.51)
        leaf = jax.tree.leaves(e.params)[0]
        self.assertLen(leaf.sharding.device_set, 1)
        audio = self.rng.normal(size=5000)
        np.testing.assert_allclose(
            e.embed_one(audio).frames, self.embedder.embed_one(audio).frames, atol=1e-6
        )


class CheckpointAndCliTest(absltest.TestCase):
    def _tempdir(self):
        path = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, path)
        return path

    def test_missing_and_corrupt_checkpoints_raise_a_clear_error(self):
        tmp = self._tempdir()
        with self.assertRaisesRegex(checkpointing.CheckpointError, "does not exist"):
            embedding.Embedder.from_checkpoint(os.path.join(tmp, "nope"))
        with self.assertRaisesRegex(checkpointing.CheckpointError, "No finished checkpoint"):
            embedding.Embedder.from_checkpoint(tmp)
        step = os.path.join(tmp, "best", "3")
        os.makedirs(os.path.join(step, "params"))
        open(os.path.join(step, "commit_success.txt"), "w").close()
        with open(os.path.join(step, "params", "_METADATA"), "w") as f:
            f.write("not json")
        damaged = r"best can be loaded \(step 3: "
        with self.assertRaisesRegex(checkpointing.CheckpointError, damaged):
            embedding.Embedder.from_checkpoint(tmp)

    def test_cli_embeds_a_folder_and_skips_bad_files(self):
        config = _config()
        params = model.init(jax.random.key(1), config.model)
        workdir = self._tempdir()
        save_checkpoint(workdir, config, params)
        folder = self._tempdir()
        rng = np.random.default_rng(5)
        sf.write(os.path.join(folder, "a.wav"), 0.1 * rng.normal(size=4000), 8000)
        os.makedirs(os.path.join(folder, "sub"))
        sf.write(os.path.join(folder, "sub", "b.flac"), 0.1 * rng.normal(size=20_000), 16000)
        with open(os.path.join(folder, "broken.wav"), "wb") as f:
            f.write(b"RIFF\x00\x00garbage")
        with open(os.path.join(folder, "notes.txt"), "w") as f:
            f.write("hello")
        output = os.path.join(self._tempdir(), "out.npz")
        result = _run_embed(f"--checkpoint={workdir}", f"--input={folder}", f"--output={output}")
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        self.assertIn("Skipped 2 files", result.stdout)
        out = np.load(output)
        self.assertEqual(
            [os.path.relpath(p, folder) for p in out["paths"]], ["a.wav", "sub/b.flac"]
        )
        self.assertEqual(sorted(out["skipped_reasons"]), ["corrupt", "unknown_extension"])
        np.testing.assert_array_equal(out["offsets"], [0, 49, 49 + 124])
        # The checkpoint's params, not fresh ones: compare with an in-process embedding.
        e = embedding.Embedder(params, config.model, window_seconds=config.dataset.crop_seconds)
        audio, rate = sf.read(os.path.join(folder, "sub", "b.flac"))
        ref = e.embed_one(audio, rate)
        np.testing.assert_allclose(out["frames"][49:], ref.frames, atol=1e-5)  # float32 end to end
        np.testing.assert_allclose(out["clip"][1], ref.clip, atol=1e-5)
        np.testing.assert_allclose(out["timestamps"][49:], ref.timestamps)

        # --output_dir: one .npz per file at its relative path, the same numbers.
        per_file = self._tempdir()
        result = _run_embed(
            f"--checkpoint={workdir}", f"--input={folder}", f"--output_dir={per_file}"
        )
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        written = sorted(
            os.path.relpath(os.path.join(d, f), per_file)
            for d, _, files in os.walk(per_file)
            for f in files
        )
        self.assertEqual(written, ["a.wav.npz", "sub/b.flac.npz"])
        one = np.load(os.path.join(per_file, "sub", "b.flac.npz"))
        np.testing.assert_array_equal(one["frames"], out["frames"][49:])
        np.testing.assert_array_equal(one["timestamps"], out["timestamps"][49:])
        np.testing.assert_array_equal(one["clip"], out["clip"][1])
        both = _run_embed(
            f"--checkpoint={workdir}",
            f"--input={folder}",
            f"--output_dir={per_file}",
            f"--output={output}",
        )
        self.assertEqual(both.returncode, 2)
        self.assertIn("contradict", both.stderr)

        missing = _run_embed(
            "--checkpoint=/nonexistent/run", f"--input={folder}", f"--output={output}"
        )
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("--checkpoint=/nonexistent/run: no such folder", missing.stderr)


if __name__ == "__main__":
    absltest.main()
