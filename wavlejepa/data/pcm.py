"""The project's audio conventions: the model's rate (16 kHz), and 16-bit PCM <-> float audio
with float = int16 / 32768, in [-1, 1).

Its own module so grain workers (transforms.py) need not import the decoders (scipy, soundfile).
"""

import numpy as np

SAMPLE_RATE = 16_000  # The model's input rate: 160-sample hop = 100 frames/s (nets/waveform.py).
INT16_SCALE = 32768.0  # As soundfile reads int16 files as float.


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16, clipping what resampling pushed past full scale."""
    return np.clip(np.round(audio * INT16_SCALE), -32768, 32767).astype(np.int16)


def int16_to_float(audio: np.ndarray) -> np.ndarray:
    """int16-scaled integers (any integer dtype) -> float32 in [-1, 1)."""
    return np.asarray(audio).astype(np.float32) / np.float32(INT16_SCALE)
