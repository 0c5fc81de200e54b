"""The HEAR 2021 API (hearbenchmark.com/hear-api.html) over `embedding.Embedder`; no torch.

  from wavlejepa import hear
  model = hear.load_model("/tmp/wj/run")  # A workdir/checkpoint; "" = untrained base model.
  model = hear.load_model("/tmp/wj/run/config.json")  # Untrained, of that run's config (or a .py).
  embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)  # audio [n, samples], 16 kHz
  scene = hear.get_scene_embeddings(audio, model)  # [n, scene_embedding_size]

Frame embeddings are at 100 Hz with timestamps (ms) at frame centres, 7.5 ms + 10 ms * i; the
scene embedding is their mean. tf.Tensor audio gives tf.float32 tensors, numpy gives numpy.
"""

import functools
import importlib.util
import os

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from wavlejepa import checkpointing, embedding, model_sizes, saved_config
from wavlejepa import model as model_lib
from wavlejepa.nets import waveform

DEFAULT_SIZE = "base"  # The size of configs/default.py, used when no model file is given.


@functools.cache
def model_class() -> type:
    """`WavLeJEPAModel`, what the HEAR API calls a model: a tf.Module holding a (JAX)
    `embedding.Embedder`. Built on first use, so importing this module does not import TensorFlow
    (~6 s); only loading a model does, as the HEAR API asks for a tf.Module."""
    import tensorflow as tf

    class WavLeJEPAModel(tf.Module):
        sample_rate = embedding.SAMPLE_RATE

        def __init__(self, embedder: embedding.Embedder):
            super().__init__(name="wavlejepa")
            self.embedder = embedder
            self.scene_embedding_size = int(embedder.dim)
            self.timestamp_embedding_size = int(embedder.dim)

    return WavLeJEPAModel


def _config_from_file(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of a config file such as configs/cpu_debug.py."""
    spec = importlib.util.spec_from_file_location("wavlejepa_hear_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _config_from_json(path: str) -> ml_collections.ConfigDict:
    """The run config saved at `path` (a workdir's config.json), checked to hold what an
    `Embedder` reads: `model` and `dataset.crop_seconds`.

    Raises:
      saved_config.SavedConfigError: unreadable, not JSON, or not a run's config.
    """
    config = saved_config.load(path)
    if (
        not isinstance(config.get("model"), ml_collections.ConfigDict)
        or not isinstance(config.get("dataset"), ml_collections.ConfigDict)
        or "crop_seconds" not in config.dataset
    ):
        raise saved_config.SavedConfigError(
            f"{path} is JSON but not a run's config (it lacks model or dataset.crop_seconds): "
            "give the config.json a run writes into its workdir, or a config file (.py)."
        )
    folder = epath.Path(path).parent
    if any((folder / sub).is_dir() for sub in (checkpointing.BEST_DIR, checkpointing.LATEST_DIR)):
        # The file is only the config: the trained weights beside it are not read.
        logging.warning(
            "hear.load_model(%r) is an untrained model of that config; "
            "hear.load_model(%r) loads the trained model of that folder.",
            path,
            str(folder),
        )
    return config


def load_model(model_file_path: str = ""):
    """Loads a model for the HEAR API.

    Args:
      model_file_path: "" for an untrained `base` model (a baseline); a workdir or checkpoint
        directory (see `pretrained.load`); or a config file (`.py`) or a run's saved
        `<workdir>/config.json`, for an untrained model of that config (`Embedder.random_init`,
        seed 0; a config.json beside checkpoints logs that their weights are not read).
    Raises:
      checkpointing.CheckpointError: a directory that holds no loadable checkpoint, or a file
        that is neither a config file (.py) nor a config.json.
      saved_config.SavedConfigError: a .json file that is not a run's config.
    """
    if not model_file_path:
        cfg = model_sizes.model_config(DEFAULT_SIZE)
        params = jax.jit(lambda key: model_lib.init(key, cfg))(jax.random.key(0))
        return model_class()(embedding.Embedder(params, cfg))
    if model_file_path.endswith(".py") and os.path.isfile(model_file_path):
        return model_class()(embedding.Embedder.random_init(_config_from_file(model_file_path)))
    if model_file_path.endswith(".json"):  # Local or remote, as saved_config reads either.
        return model_class()(embedding.Embedder.random_init(_config_from_json(model_file_path)))
    if epath.Path(model_file_path).is_file():
        raise checkpointing.CheckpointError(
            f"{model_file_path!r} is a file, not a checkpoint directory nor a config: give "
            "hear.load_model a training workdir (or one of its checkpoints/<step> folders), a "
            "config file (.py) or a run's <workdir>/config.json."
        )
    return model_class()(embedding.Embedder.from_checkpoint(model_file_path))


def _is_tf(x) -> bool:
    """Whether x is a TensorFlow tensor, without importing TensorFlow."""
    return type(x).__module__.startswith("tensorflow")


def _as_numpy(audio) -> tuple[np.ndarray, bool]:
    """(float32 [n, samples], whether the input was a tf.Tensor)."""
    is_tf = _is_tf(audio)
    array = np.asarray(audio.numpy() if is_tf else audio, np.float32)
    if array.ndim != 2:
        raise ValueError(f"HEAR audio is [n_sounds, samples]; got shape {array.shape}.")
    return array, is_tf


def _frames(audio_NxS: np.ndarray, model) -> tuple[np.ndarray, np.ndarray]:
    """float32 embeddings [n, frames, dim] and timestamps [n, frames] in milliseconds."""
    if not len(audio_NxS):  # No sounds: empty outputs of the right rank.
        embedder, num_samples = model.embedder, audio_NxS.shape[1]
        cfg = embedder.cfg
        frames = waveform.num_frames(max(num_samples, waveform.receptive_samples(cfg)), cfg)
        frames = frames if num_samples else 0
        return np.zeros((0, frames, embedder.dim), np.float32), np.zeros((0, frames), np.float32)
    results = model.embedder.embed(list(audio_NxS), pad_short=True)  # HEAR takes any length.
    embeddings = np.stack([r.frames for r in results]).astype(np.float32)
    timestamps = np.stack([1000.0 * r.timestamps for r in results]).astype(np.float32)
    return embeddings, timestamps


def get_timestamp_embeddings(audio, model):
    """audio [n, samples] at 16 kHz -> (embeddings [n, frames, dim], timestamps [n, frames] ms)."""
    audio_NxS, is_tf = _as_numpy(audio)
    embeddings, timestamps = _frames(audio_NxS, model)
    if is_tf:
        import tensorflow as tf  # Already imported by whoever made the input.

        return tf.constant(embeddings, tf.float32), tf.constant(timestamps, tf.float32)
    return embeddings, timestamps


def get_scene_embeddings(audio, model):
    """audio [n, samples] at 16 kHz -> [n, dim]: the mean of each sound's frame embeddings."""
    audio_NxS, is_tf = _as_numpy(audio)
    embeddings, _ = _frames(audio_NxS, model)
    scene = embeddings.mean(axis=1).astype(np.float32)
    if is_tf:
        import tensorflow as tf  # Already imported by whoever made the input.

        return tf.constant(scene, tf.float32)
    return scene
