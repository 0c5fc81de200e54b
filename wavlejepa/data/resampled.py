"""A random-access source whose audio is resampled on read: catalog datasets at another rate.

TFDS catalog datasets keep their own rate (`spoken_digit` is 8 kHz); the model's input is
`config.dataset.sample_rate`. Each record's waveform is resampled when it is read (polyphase,
`decode.resample`), then stored back as int16 like every other source's.
"""

import numpy as np

from wavlejepa.data import decode, pcm


class ResampledSource:
    """`source[i]` with `record[audio_key]` resampled from `rate_in` to `rate_out` (int16)."""

    def __init__(self, source, audio_key: str, rate_in: int, rate_out: int):
        self.source, self.audio_key = source, audio_key
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index):
        record = dict(self.source[index])
        audio = np.asarray(record[self.audio_key])
        if np.issubdtype(audio.dtype, np.integer):
            audio = pcm.int16_to_float(audio)
        resampled = decode.resample(audio.astype(np.float64), self.rate_in, self.rate_out)
        record[self.audio_key] = pcm.to_int16(resampled)
        return record

    def __repr__(self) -> str:
        return f"ResampledSource({self.source!r}, {self.rate_in} -> {self.rate_out} Hz)"
