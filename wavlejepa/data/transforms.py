"""Per-clip grain transforms of the input pipeline: waveform to float, random crops, batching.

A clip [samples] becomes `crops_per_clip` crops [crops_per_clip, crop_samples], each normalised to
zero mean and unit variance; a batch of clips becomes {"audio": [clips * crops_per_clip, samples]}.
"""

import dataclasses

import grain
import numpy as np

from wavlejepa.data import pcm

NORMALIZE_EPS = 1e-5  # WavJEPA's eps; added to the variance, as in layer norm.


def crop_samples(dataset_config) -> int:
    """Samples in one crop: round(crop_seconds * sample_rate), e.g. 2.01 s at 16 kHz -> 32,160."""
    return round(dataset_config.crop_seconds * dataset_config.sample_rate)


def normalize(audio: np.ndarray, eps: float = NORMALIZE_EPS) -> np.ndarray:
    """Per row zero mean, unit variance: (x - mean) / sqrt(var + eps) over the last axis.

    Args:
      audio: [..., samples] float.
    Returns:
      float32 [..., samples]; a constant row comes out as zeros (never NaN).
    """
    x = np.asarray(audio, np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return (centred / np.sqrt(var + eps)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ToFloat(grain.transforms.Map):
    """A data-source record -> its waveform, float32 [samples] in [-1, 1], mono.

    Integer audio (int16 ours; int64 in TFDS catalog datasets such as speech_commands) is taken as
    16-bit PCM; several channels [samples, channels] are averaged.
    """

    audio_key: str = "audio"

    def map(self, element) -> np.ndarray:
        audio = np.asarray(element[self.audio_key])
        if np.issubdtype(audio.dtype, np.integer):
            audio = pcm.int16_to_float(audio)
        audio = audio.astype(np.float32, copy=False)
        return audio.mean(axis=-1) if audio.ndim == 2 else audio


@dataclasses.dataclass(frozen=True)
class AtLeast(grain.transforms.Filter):
    """Keeps clips of at least `samples` samples (short_clips="skip")."""

    samples: int

    def filter(self, element: np.ndarray) -> bool:
        return element.shape[0] >= self.samples


@dataclasses.dataclass(frozen=True)
class RandomCrops(grain.transforms.RandomMap):
    """float32 [samples] -> float32 [num_crops, crop_samples], each crop normalised.

    Crop starts are uniform over the clip; a clip shorter than a crop is zero-padded at the end
    (so all its crops are equal). The rng is grain's per-record generator, seeded from the sampler
    seed and the record's position in the sampler, which makes the crops reproducible on resume.
    """

    num_crops: int
    crop_samples: int

    def random_map(self, element: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = element.shape[0]
        if n < self.crop_samples:
            padded = np.zeros(self.crop_samples, np.float32)
            padded[:n] = element
            crops = np.broadcast_to(padded, (self.num_crops, self.crop_samples))
        else:
            starts = rng.integers(0, n - self.crop_samples + 1, size=self.num_crops)
            crops = np.stack([element[s : s + self.crop_samples] for s in starts])
        return normalize(crops)


def concat_crops(clips: list[np.ndarray]) -> dict[str, np.ndarray]:
    """grain batch_fn: clips of [num_crops, crop_samples] -> {"audio": [batch, crop_samples]}."""
    return {"audio": np.concatenate(clips, axis=0)}
