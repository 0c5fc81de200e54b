"""The HEAR 2021 API (wavlejepa/hear.py) against the checks of the official hear-validator.

hearvalidator 2021.0.6 (validate.py) checks: load_model returns a tf.Module or torch Module;
sample_rate in {16000, 22050, 32000, 44100, 48000}; scene/timestamp_embedding_size are ints;
for 2 sounds of white noise in [-1, 1] of 1.07, 1.98 and 4.0 s: embeddings tf.float32 of 3 dims
[n, frames, timestamp_embedding_size], timestamps 2-D of shape [n, frames], regular (no
deviation > 1 ms from the mean interval), none past the audio's end; scene embeddings of 4 sounds
of 2.74 s: float32 [4, scene_embedding_size]. We add numpy input, lengths that are not a multiple
of the hop, very short sounds, and batch consistency.
"""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl.testing import absltest, parameterized

from configs import cpu_debug, default
from wavlejepa import checkpointing, embedding, hear, model, saved_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_DEBUG = os.path.join(REPO, "configs", "cpu_debug.py")
ACCEPTABLE_SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)  # The validator's list.


class HearApiTest(parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = hear.load_model(CPU_DEBUG)

    def test_model_attributes(self):
        self.assertIsInstance(self.model, tf.Module)
        self.assertIn(self.model.sample_rate, ACCEPTABLE_SAMPLE_RATES)
        self.assertEqual(self.model.sample_rate, 16000)
        for size in (self.model.scene_embedding_size, self.model.timestamp_embedding_size):
            self.assertIsInstance(size, int)
            self.assertEqual(size, 64)  # The tiny row's encoder width.

    def _check_timestamp_embeddings(self, audio, num_samples):
        embeddings, timestamps = hear.get_timestamp_embeddings(audio, self.model)
        self.assertIsInstance(embeddings, tf.Tensor)
        self.assertEqual(embeddings.dtype, tf.float32)
        embeddings, timestamps = embeddings.numpy(), timestamps.numpy()
        self.assertEqual(embeddings.ndim, 3)
        self.assertEqual(timestamps.ndim, 2)
        self.assertEqual(embeddings.shape[0], audio.shape[0])
        self.assertEqual(embeddings.shape[:2], timestamps.shape)
        self.assertEqual(embeddings.shape[2], self.model.timestamp_embedding_size)
        self.assertTrue(np.all(np.isfinite(embeddings)))
        length_ms = 1000 * num_samples / 16000
        self.assertLessEqual(timestamps.max(), length_ms)
        if timestamps.shape[1] > 1:
            diff = np.diff(timestamps)
            self.assertLessEqual(np.abs(diff - diff.mean()).max(), 1.0)
            self.assertLessEqual(timestamps.min(), diff.mean())  # Starts at the beginning.
            self.assertGreaterEqual(timestamps.max(), length_ms - 50)  # Reaches the end.
        return embeddings, timestamps

    @parameterized.named_parameters(
        ("validator_1_07s", int(1.07 * 16000)),
        ("validator_1_98s", int(1.98 * 16000)),
        ("validator_4s", int(4.0 * 16000)),
        ("not_a_hop_multiple", 16000 + 77),
        ("shorter_than_a_window", 3000),
        ("one_frame", 250),
        ("shorter_than_a_frame", 100),
    )
    def test_timestamp_embeddings(self, num_samples):
        audio = tf.random.uniform((2, num_samples), seed=num_samples) * 2 - 1.0
        embeddings, timestamps = self._check_timestamp_embeddings(audio, num_samples)
        frames = max(1, (num_samples - 240) // 160 + 1)
        self.assertEqual(embeddings.shape, (2, frames, 64))
        if num_samples >= 240:  # Frame centres: 7.5 ms + 10 ms * i.
            np.testing.assert_allclose(timestamps[0], 7.5 + 10 * np.arange(frames), rtol=1e-6)

    def test_scene_embeddings(self):
        audio = tf.random.uniform((4, int(2.74 * 16000)), seed=1) * 2 - 1.0
        scene = hear.get_scene_embeddings(audio, self.model)
        self.assertIsInstance(scene, tf.Tensor)
        self.assertEqual(scene.dtype, tf.float32)
        self.assertEqual(scene.shape, (4, self.model.scene_embedding_size))
        frames, _ = hear.get_timestamp_embeddings(audio, self.model)
        np.testing.assert_allclose(scene.numpy(), frames.numpy().mean(1), atol=1e-6)

    def test_numpy_in_numpy_out_and_batch_consistency(self):
        audio = np.random.default_rng(0).uniform(-1, 1, size=(3, 20_000)).astype(np.float32)
        embeddings, timestamps = hear.get_timestamp_embeddings(audio, self.model)
        self.assertIsInstance(embeddings, np.ndarray)
        self.assertEqual(embeddings.dtype, np.float32)
        scene = hear.get_scene_embeddings(audio, self.model)
        self.assertIsInstance(scene, np.ndarray)
        self.assertEqual(scene.dtype, np.float32)
        for i in range(3):
            alone, alone_ts = hear.get_timestamp_embeddings(audio[i : i + 1], self.model)
            np.testing.assert_allclose(alone[0], embeddings[i], atol=1e-5)
            np.testing.assert_array_equal(alone_ts[0], timestamps[i])
        # Different sounds give different embeddings (the model is not a constant).
        self.assertGreater(np.abs(scene[0] - scene[1]).max(), 1e-4)

    @parameterized.named_parameters(("samples", 20_000, 124), ("no_samples", 0, 0))
    def test_no_sounds_give_empty_outputs_of_the_right_rank(self, num_samples, frames):
        embeddings, timestamps = hear.get_timestamp_embeddings(
            np.zeros((0, num_samples), np.float32), self.model
        )
        self.assertEqual(embeddings.shape, (0, frames, 64))
        self.assertEqual(timestamps.shape, (0, frames))
        self.assertEqual(hear.get_scene_embeddings(np.zeros((0, 800)), self.model).shape, (0, 64))
        # The frame count is the one real sounds of that length get.
        if num_samples:
            real, _ = hear.get_timestamp_embeddings(np.ones((1, num_samples)), self.model)
            self.assertEqual(real.shape[1], frames)

    def test_nan_or_inf_samples_name_the_sound(self):
        audio = np.zeros((3, 4000), np.float32)
        audio[2, 17] = np.nan
        audio[2, 40] = np.inf
        with self.assertRaisesRegex(ValueError, "Sound 2 holds 2 NaN or inf"):
            hear.get_timestamp_embeddings(audio, self.model)


class LoadModelTest(absltest.TestCase):
    def test_default_is_an_untrained_model_of_the_default_config(self):
        self.assertEqual(hear.DEFAULT_SIZE, default.get_config().model.size)
        # The base model takes ~30 s to initialise on 2 CPU cores: check the path on tiny.
        with mock.patch.object(hear, "DEFAULT_SIZE", "tiny"):
            loaded = hear.load_model()
        self.assertIsInstance(loaded, tf.Module)
        init = jax.jit(model.init, static_argnames="cfg")
        expected = init(jax.random.key(0), cfg=loaded.embedder.cfg)  # A frozen (hashable) config.
        jax.tree.map(np.testing.assert_allclose, loaded.embedder.params, expected)
        self.assertEqual(loaded.embedder.window_frames, 200)  # The default 2.01 s crop.

    def test_missing_checkpoint_is_a_clear_error(self):
        with self.assertRaisesRegex(checkpointing.CheckpointError, "does not exist"):
            hear.load_model("/nonexistent/wavlejepa_run")

    def test_importing_the_module_does_not_import_tensorflow(self):
        probe = "import sys, wavlejepa.hear; print('tensorflow' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
        )
        self.assertEqual(out.stdout.strip(), "False")

    def test_an_audio_file_is_not_taken_for_a_checkpoint_or_a_config(self):
        wav = os.path.join(REPO, "wavlejepa", "data", "samples", "fsdd", "0_george_0.wav")
        with self.assertRaisesRegex(
            checkpointing.CheckpointError,
            r"0_george_0.wav' is a file, not a checkpoint directory nor a config: give .* a "
            r"training workdir .*, a config file \(.py\) or a run's <workdir>/config.json",
        ):
            hear.load_model(wav)


def _write_json(folder: str, value) -> str:
    path = os.path.join(folder, "config.json")
    with open(path, "w") as f:
        f.write(value if isinstance(value, str) else json.dumps(value))
    return path


def _embed(loaded, audio_NxS: np.ndarray) -> np.ndarray:
    return hear.get_timestamp_embeddings(audio_NxS, loaded)[0]


class LoadModelFromConfigJsonTest(absltest.TestCase):
    """A run's config.json gives the untrained model of that config: the .py's model, or a saved
    checkpoint of the same (seed-0) params, to the number."""

    @classmethod
    def setUpClass(cls):
        cls.audio = np.random.default_rng(3).uniform(-1, 1, size=(2, 12_345)).astype(np.float32)
        cls.from_py = hear.load_model(CPU_DEBUG)
        cls.expected = _embed(cls.from_py, cls.audio)

    def setUp(self):
        self.folder = self.enter_context(tempfile.TemporaryDirectory())

    def test_config_json_gives_the_model_of_its_py_config(self):
        # As a run writes it into its workdir (train.py): the whole config, best-effort JSON.
        path = _write_json(self.folder, cpu_debug.get_config().to_json_best_effort(indent=2))
        loaded = hear.load_model(path)
        self.assertIsInstance(loaded, tf.Module)
        self.assertEqual(loaded.embedder.cfg, self.from_py.embedder.cfg)
        self.assertEqual(loaded.embedder.window_frames, self.from_py.embedder.window_frames)
        self.assertEqual(loaded.timestamp_embedding_size, 64)
        jax.tree.map(
            np.testing.assert_array_equal, loaded.embedder.params, self.from_py.embedder.params
        )
        np.testing.assert_array_equal(_embed(loaded, self.audio), self.expected)

    def test_config_json_of_a_model_folder_matches_its_checkpoint(self):
        config = cpu_debug.get_config()
        params = jax.jit(model.init, static_argnames="cfg")(
            jax.random.key(0), cfg=ml_collections.FrozenConfigDict(config.model)
        )
        checkpointing.save_model(self.folder, params, config)  # config.json + best/0.
        from_checkpoint = hear.load_model(self.folder)
        with self.assertLogs(level="WARNING") as logs:
            from_json = hear.load_model(os.path.join(self.folder, "config.json"))
        self.assertIn("untrained model of that config", logs.output[0])
        self.assertIn(f"hear.load_model('{self.folder}') loads the trained model", logs.output[0])
        np.testing.assert_array_equal(_embed(from_checkpoint, self.audio), self.expected)
        np.testing.assert_array_equal(_embed(from_json, self.audio), self.expected)

    def test_the_json_keys_are_the_ones_used(self):
        saved = json.loads(cpu_debug.get_config().to_json_best_effort())
        saved["model"]["encoder_depth"] = 1
        saved["dataset"]["crop_seconds"] = 1.01
        loaded = hear.load_model(_write_json(self.folder, saved))
        config = cpu_debug.get_config()
        config.model.encoder_depth = 1
        config.dataset.crop_seconds = 1.01
        expected = embedding.Embedder.random_init(config)
        self.assertEqual(loaded.embedder.cfg, expected.cfg)
        self.assertEqual(loaded.embedder.window_frames, 100)  # 50 frames under cpu_debug.
        jax.tree.map(np.testing.assert_array_equal, loaded.embedder.params, expected.params)
        depth = lambda m: m.embedder.params["context_encoder"]["blocks"]["mlp"]["out"]["kernel"]
        self.assertEqual(depth(loaded).shape[0], 1)  # Blocks are stacked: one, not cpu_debug's 2.
        self.assertEqual(depth(self.from_py).shape[0], 2)

    def test_json_that_is_not_a_run_config_is_a_clear_error(self):
        for text, message in (
            ('{"model": {', "config.json:1: not valid JSON"),
            ("[1, 2]", "holds a JSON list, not a config"),
            (
                '{"learning_rate": 0.1}',
                r"is JSON but not a run's config \(it lacks model or dataset",
            ),
        ):
            with self.subTest(text=text):
                with self.assertRaisesRegex(saved_config.SavedConfigError, message):
                    hear.load_model(_write_json(self.folder, text))

    def test_missing_config_json_is_a_clear_error(self):
        with self.assertRaisesRegex(saved_config.SavedConfigError, "cannot read it"):
            hear.load_model(os.path.join(self.folder, "config.json"))


if __name__ == "__main__":
    absltest.main()
