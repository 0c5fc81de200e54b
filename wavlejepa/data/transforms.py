"""Per-record grain transforms of the input pipeline: waveform to float, random crops, batching.

Between stages a record is a *stretch*: {"audio": float32 [samples], "clip_starts": int64 [clips]},
one source clip (ToFloat) or several joined end to end (packing.PackedClips), with the sample
offset where each clip begins. RandomCrops cuts `num_crops` crops from it:
{"audio": float32 [num_crops, crop_samples], "lengths": int32 [num_crops],
 "clip_starts": int32 [num_crops, MAX_CLIPS_PER_CROP]}, each crop normalised over its real samples;
concat_crops stacks the crops of a batch of stretches row-wise.
"""

import dataclasses

import grain
import numpy as np

from wavlejepa.data import pcm

NORMALIZE_EPS = 1e-5  # WavJEPA's eps; added to the variance, as in layer norm.
MAX_CLIPS_PER_CROP = 8  # Clip starts recorded per crop; later ones are dropped.


def crop_samples(dataset_config) -> int:
    """Samples in one crop: round(crop_seconds * sample_rate), e.g. 2.01 s at 16 kHz -> 32,160."""
    return round(dataset_config.crop_seconds * dataset_config.sample_rate)


def normalize(audio: np.ndarray, lengths=None, eps: float = NORMALIZE_EPS) -> np.ndarray:
    """Per row zero mean, unit variance over its first `lengths` samples; the rest set to 0.

    (x - mean) / sqrt(var + eps), mean and variance over the real samples only, so padding
    neither shifts nor shrinks the audio.

    Args:
      audio: [..., samples] float.
      lengths: int [...], real samples at the start of each row; None = every sample is real.
    Returns:
      float32 [..., samples]; a constant or empty row comes out as zeros (never NaN).
    """
    x = np.asarray(audio, np.float64)
    if lengths is None:
        lengths = np.full(x.shape[:-1], x.shape[-1])
    valid = np.arange(x.shape[-1]) < np.asarray(lengths)[..., None]
    count = np.maximum(valid.sum(axis=-1, keepdims=True), 1)
    mean = np.where(valid, x, 0.0).sum(axis=-1, keepdims=True) / count
    centred = np.where(valid, x - mean, 0.0)
    var = (centred * centred).sum(axis=-1, keepdims=True) / count
    return (centred / np.sqrt(var + eps)).astype(np.float32)


def to_float(audio: np.ndarray) -> np.ndarray:
    """A stored waveform -> float32 [samples] in [-1, 1], mono.

    Integer audio (int16 ours; int64 in TFDS catalog datasets such as speech_commands) is taken as
    16-bit PCM; several channels [samples, channels] are averaged.
    """
    audio = np.asarray(audio)
    if np.issubdtype(audio.dtype, np.integer):
        audio = pcm.int16_to_float(audio)
    audio = audio.astype(np.float32, copy=False)
    return audio.mean(axis=-1) if audio.ndim == 2 else audio


def crop_clip_starts(stretch_starts: np.ndarray, offset: int, samples: int) -> np.ndarray:
    """Where clips begin inside the crop [offset, offset + samples) of a stretch.

    Args:
      stretch_starts: int [clips], increasing clip starts in the stretch (the first is 0).
    Returns:
      int32 [MAX_CLIPS_PER_CROP]: 0 (the crop's first segment), then each clip start strictly
      inside the crop relative to `offset`, then -1s; starts beyond the cap are dropped.
    """
    starts = np.asarray(stretch_starts)
    inside = starts[(starts > offset) & (starts < offset + samples)] - offset
    out = np.full(MAX_CLIPS_PER_CROP, -1, np.int32)
    kept = np.concatenate([[0], inside])[:MAX_CLIPS_PER_CROP]
    out[: len(kept)] = kept
    return out


@dataclasses.dataclass(frozen=True)
class ToFloat(grain.transforms.Map):
    """A data-source record -> a one-clip stretch: {"audio": to_float(...), "clip_starts": [0]}."""

    audio_key: str = "audio"

    def map(self, element) -> dict[str, np.ndarray]:
        return {"audio": to_float(element[self.audio_key]), "clip_starts": np.zeros(1, np.int64)}


@dataclasses.dataclass(frozen=True)
class AtLeast(grain.transforms.Filter):
    """Keeps stretches of at least `samples` samples (short_clips="skip")."""

    samples: int

    def filter(self, element: dict[str, np.ndarray]) -> bool:
        return element["audio"].shape[0] >= self.samples


@dataclasses.dataclass(frozen=True)
class RandomCrops(grain.transforms.RandomMap):
    """A stretch -> `num_crops` crops with their real lengths and clip starts (module docstring).

    - Several clips (short_clips="pack"): consecutive, non-overlapping crops from a uniform
      random shift, so all are full of audio and no two are the same window.
    - One clip of at least crop_samples: crop starts uniform over the clip, drawn independently
      (WavJEPA's crops; they may overlap).
    - One shorter clip (short_clips="pad"): the clip zero-padded at the end, num_crops times;
      lengths = its samples.
    The rng is grain's per-record generator, seeded from the sampler seed and the record's
    position in the sampler, which makes the crops reproducible on resume.
    """

    num_crops: int
    crop_samples: int

    def random_map(self, element: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
        audio, starts = element["audio"], element["clip_starts"]
        n, c, k = audio.shape[0], self.crop_samples, self.num_crops
        if len(starts) > 1:
            offsets = int(rng.integers(0, n - k * c + 1)) + c * np.arange(k)
        elif n >= c:
            offsets = rng.integers(0, n - c + 1, size=k)
        else:
            padded = np.zeros(c, np.float32)
            padded[:n] = audio
            lengths = np.full(k, n, np.int32)
            return {
                "audio": normalize(np.broadcast_to(padded, (k, c)), lengths),
                "lengths": lengths,
                "clip_starts": np.tile(crop_clip_starts(starts, 0, c), (k, 1)),
            }
        clip_starts = np.stack([crop_clip_starts(starts, o, c) for o in offsets])
        lengths = np.full(k, c, np.int32)
        crops = normalize(np.stack([audio[o : o + c] for o in offsets]), lengths)
        return {"audio": crops, "lengths": lengths, "clip_starts": clip_starts}


def concat_crops(stretches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """grain batch_fn: crops of several stretches ([num_crops, ...] each) -> [batch, ...] each."""
    return {key: np.concatenate([s[key] for s in stretches]) for key in stretches[0]}
