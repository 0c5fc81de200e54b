"""Synthetic audio clips for `debug_dummy_data`: a random-access source with no dataset behind it.

Kept free of TFDS/TensorFlow imports so grain worker processes that unpickle it start quickly.
"""

import numpy as np


class SyntheticSource:
    """N synthetic clips, deterministic per index: three sinusoids plus a little noise.

    Lengths vary over [min_samples, max_samples] so crops and padding are both exercised.
    Records look like a prepared dataset's: {"audio": float32 [samples] in [-1, 1]}.
    """

    def __init__(
        self, num_clips: int, min_samples: int, max_samples: int, sample_rate: int, seed: int = 0
    ):
        self.num_clips, self.seed, self.sample_rate = num_clips, seed, sample_rate
        self.min_samples, self.max_samples = min_samples, max_samples

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.num_clips:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        n = int(rng.integers(self.min_samples, self.max_samples + 1))
        t = np.arange(n) / self.sample_rate
        freqs = rng.uniform(50.0, self.sample_rate / 4, size=3)
        amps, phases = rng.uniform(0.05, 0.3, size=3), rng.uniform(0, 2 * np.pi, size=3)
        audio = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
        audio += 0.01 * rng.standard_normal(n)
        return {"audio": audio.astype(np.float32)}

    def __repr__(self) -> str:  # grain checks it when restoring an iterator state.
        return (
            f"SyntheticSource(num_clips={self.num_clips}, min_samples={self.min_samples}, "
            f"max_samples={self.max_samples}, sample_rate={self.sample_rate}, seed={self.seed})"
        )
