"""Decodes one audio file into 16 kHz mono int16 samples, or says in one word why it cannot.

Every way a file can be bad has a reason code (`REASONS`); `decode_file` raises `BadAudioError`
with one of them, so the dataset builder can count, list and (in strict mode) report it.
"""

import dataclasses
import math
import os
import stat
import struct

import numpy as np
import scipy.signal
import soundfile as sf

from wavlejepa.data.pcm import (  # noqa: F401  (int16_to_float: for readers)
    SAMPLE_RATE,
    int16_to_float,
    to_int16,
)

# Reason codes, in the order the checks run. The builder's summary and skipped.tsv use these.
REASONS = (
    "unknown_extension",  # Not an audio extension we read (e.g. .txt, .csv, .DS_Store).
    "unreadable",  # The OS refused: broken link, permissions, a vanished file.
    "empty_file",  # Zero bytes on disk.
    "corrupt",  # libsndfile cannot parse the header or decode the data.
    "truncated",  # The file holds fewer frames than its header declares.
    "zero_length",  # A valid header declaring no audio at all.
    "non_finite",  # NaN or inf samples (float files).
    "too_short",  # Shorter than min_duration_seconds.
    "silent",  # Every sample rounds to zero in int16.
)

_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au")
# libsndfile reads MP3 only from 1.1.0 on; where it cannot, .mp3 files count as unknown_extension.
AUDIO_EXTENSIONS = frozenset(_EXTENSIONS + ((".mp3",) if "MP3" in sf.available_formats() else ()))


class BadAudioError(ValueError):
    """A file that cannot become a training clip; `reason` is one of `REASONS`."""

    def __init__(self, path: str, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        self.path, self.reason, self.detail = path, reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclasses.dataclass(frozen=True)
class DecodedClip:
    audio: np.ndarray  # int16 [samples] at the target rate, mono (float32 with keep_float).
    original_sample_rate: int  # Rate of the source file before resampling.
    duration_seconds: float  # Of the source file (= of `audio` up to one sample).


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling of float audio [samples] -> [ceil(samples * rate_out / rate_in)]."""
    if rate_in == rate_out:
        return audio
    g = math.gcd(rate_in, rate_out)
    return scipy.signal.resample_poly(audio, rate_out // g, rate_in // g)


def wav_declared_frames(path: str) -> int | None:
    """Frames a RIFF/WAVE header declares, or None when it does not say (streamed, RF64).

    libsndfile silently shortens a truncated WAV to what is on disk, so this is the only way to
    notice the missing tail: compare it with the frames actually decoded.
    """
    with open(path, "rb") as f:
        riff = f.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk_id == b"fmt ":
                fmt = f.read(size + (size & 1))
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
            elif chunk_id == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)


def decode_file(
    path: str,
    *,
    sample_rate: int = SAMPLE_RATE,
    min_duration_seconds: float = 0.0,
    allow_silent: bool = False,
    keep_float: bool = False,
) -> DecodedClip:
    """Reads, validates, downmixes (channel mean) and resamples one file.

    A FIFO, socket or device is never opened (reading one can block forever): "unreadable".
    `allow_silent` accepts all-zero audio (valid input to embed; no use for training).
    `keep_float` returns float32 audio in [-1, 1] without the int16 rounding datasets store
    (24-bit and float files keep their resolution when embedded).

    Raises:
      BadAudioError: with the first reason in `REASONS` that applies.
    """
    if os.path.splitext(path)[1].lower() not in AUDIO_EXTENSIONS:
        raise BadAudioError(path, "unknown_extension")
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise BadAudioError(path, "unreadable", "not a regular file")
        size = info.st_size
        open(path, "rb").close()  # libsndfile would call a permission error a format error.
    except OSError as e:
        raise BadAudioError(path, "unreadable", str(e)) from e
    if size == 0:
        raise BadAudioError(path, "empty_file")
    try:
        with sf.SoundFile(path) as f:
            rate, header_frames = f.samplerate, f.frames
            data = f.read(dtype="float32", always_2d=True)  # [frames, channels]
    except sf.LibsndfileError as e:  # Before OSError: it is a RuntimeError, not an OSError.
        raise BadAudioError(path, "corrupt", str(e)) from e
    except OSError as e:
        raise BadAudioError(path, "unreadable", str(e)) from e
    if path.lower().endswith((".wav", ".wave")):
        header_frames = wav_declared_frames(path) or header_frames
    if len(data) < header_frames:
        raise BadAudioError(path, "truncated", f"{len(data)} of {header_frames} frames")
    if len(data) == 0:
        raise BadAudioError(path, "zero_length")
    if not np.all(np.isfinite(data)):
        raise BadAudioError(path, "non_finite")
    duration = len(data) / rate
    if duration < min_duration_seconds:
        raise BadAudioError(path, "too_short", f"{duration:.3f} s < {min_duration_seconds} s")
    mono = data.astype(np.float64).mean(axis=1)
    resampled = resample(mono, rate, sample_rate)
    audio = resampled.astype(np.float32) if keep_float else to_int16(resampled)
    if not allow_silent and not np.any(to_int16(resampled)):
        raise BadAudioError(path, "silent")
    return DecodedClip(audio=audio, original_sample_rate=rate, duration_seconds=duration)
