"""short_clips="pack": a random-access source of stretches of short clips joined end to end.

Crops cut from a stretch are full of real audio and never repeat one padded clip, which is what
datasets of clips shorter than a crop (speech_commands' 1 s clips, 2.01 s crops) need.
"""

import math

import grain
import numpy as np

# The sampler's own split of the records into host shards, so stretches stay inside a shard.
from grain._src.core.sharding import even_split

from wavlejepa.data import transforms

_GOLDEN = (3 - math.sqrt(5)) / 2  # 1 / phi^2, about 0.382.


def spread_step(n: int) -> int:
    """A step coprime with n near n / phi^2.

    position(i) = i * step % n visits each of n positions once, and items i, i + 1, i + 2, ...
    start far apart, so the stretches of a batch of an unshuffled (eval) loader do not share clips.
    """
    step = max(1, round(n * _GOLDEN))
    while math.gcd(step, n) != 1:
        step += 1
    return step


class PackedClips:
    """Item i: clips of this host's shard, in a seeded order, joined into one stretch.

    The shard's clips (grain's even_split of the records, as the IndexSampler cuts them) are put in
    a seeded order; item i starts at position p = (i - shard start) * spread_step(n) of that order
    (cyclic) and is {"audio": float32 [samples], "clip_starts": int64 [clips]}:
      - clip order[p] alone when it holds at least crop_samples (long clips are cropped as before);
      - else clips order[p], order[p + 1], ... until the stretch holds num_crops * crop_samples,
        enough for that many non-overlapping crops (transforms.RandomCrops).
    So every clip starts one stretch per pass of the sampler, a stretch reads about
    num_crops * crop_samples / clip_samples clips (17 for 1 s clips and base crops), and two
    stretches share clips only when their starts lie within a stretch of each other in the order.
    Indices outside the shard raise IndexError (the sampler never asks for them).
    """

    def __init__(
        self,
        source,
        *,
        audio_key: str,
        crop_samples: int,
        num_crops: int,
        seed: int,
        shard_options: grain.sharding.ShardOptions,
    ):
        self._source, self._audio_key = source, audio_key
        self._crop_samples, self._num_crops = crop_samples, num_crops
        self._seed, self._shard_options = seed, shard_options
        self._start, self._end = even_split(len(source), shard_options)
        shard_size = self._end - self._start
        # Source indices of the shard's clips, in stream order.
        self.order = self._start + np.random.default_rng(seed).permutation(shard_size)
        self._step = spread_step(shard_size)

    def __len__(self) -> int:
        return len(self._source)

    def _clip(self, position: int) -> np.ndarray:
        record = self._source[int(self.order[position % len(self.order)])]
        return transforms.to_float(record[self._audio_key])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not self._start <= index < self._end:
            raise IndexError(f"{index} is outside this shard [{self._start}, {self._end}).")
        position = (index - self._start) * self._step
        first = self._clip(position)
        if first.shape[0] >= self._crop_samples:
            return {"audio": first, "clip_starts": np.zeros(1, np.int64)}
        clips = [first]
        total = first.shape[0]
        while total < self._num_crops * self._crop_samples:
            if len(clips) >= len(self.order) and total == 0:
                raise ValueError(f"Every clip of shard {self._shard_options} is empty.")
            clips.append(self._clip(position + len(clips)))
            total += clips[-1].shape[0]
        lengths = np.array([c.shape[0] for c in clips])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[lengths > 0]  # Empty clips: none.
        return {"audio": np.concatenate(clips), "clip_starts": starts.astype(np.int64)}

    def __repr__(self) -> str:  # grain checks it when restoring an iterator state.
        return (
            f"PackedClips(source={self._source!r}, audio_key={self._audio_key!r}, "
            f"crop_samples={self._crop_samples}, num_crops={self._num_crops}, "
            f"seed={self._seed}, shard_options={self._shard_options!r})"
        )
