"""Time-aligned pitch shift: a voice raised or lowered while every sound stays where it was.

`shift_pitch` is the phase-vocoder pitch shift (Laroche & Dolson, 1999; what librosa's
`effects.pitch_shift` does): stretch the audio in time by the pitch ratio with a phase vocoder
(same pitch, new duration), then resample it back to its length (pitch and spectral envelope,
i.e. formants, scaled by the ratio; timing restored). So sample i of the output sounds what
sample i of the input said, in another voice: the frames of both line up on the same grid, which
is what the training's per-view voice change needs (the context hears one voice, the targets the
other, at the same frame positions).
"""

import fractions

import numpy as np
import scipy.signal

N_FFT = 512  # 32 ms at 16 kHz: resolves the harmonics of voices down to ~60 Hz.
HOP = 128  # 75% overlap, as the phase vocoder needs for a clean overlap-add.


def time_stretch(audio: np.ndarray, rate: float) -> np.ndarray:
    """The phase vocoder: float [samples] played `rate` times as fast at the same pitch ->
    float64 [round(samples / rate)].

    Frame j of the output takes its magnitude from time j * rate (in analysis frames, linearly
    interpolated) and advances its phase, bin by bin, by the input's own phase advance there, so
    each partial keeps its frequency.
    """
    x = np.asarray(audio, np.float64)
    out_len = round(len(x) / rate)
    _, _, spec = scipy.signal.stft(x, nperseg=N_FFT, noverlap=N_FFT - HOP)  # [bins, frames]
    spec = np.concatenate([spec, np.zeros((spec.shape[0], 1), spec.dtype)], axis=1)
    frames = spec.shape[1] - 1  # The real ones; the zero column closes the interpolation.
    steps = rate * np.arange(int(np.ceil(frames / rate)))
    steps = steps[steps < frames]  # Float rounding may put the last step on `frames`.
    left = steps.astype(int)
    frac = (steps - left)[None, :]
    before, after = spec[:, left], spec[:, left + 1]
    magnitude = (1.0 - frac) * np.abs(before) + frac * np.abs(after)
    expected = 2.0 * np.pi * HOP * np.arange(spec.shape[0])[:, None] / N_FFT
    deviation = np.angle(after) - np.angle(before) - expected
    deviation -= 2.0 * np.pi * np.round(deviation / (2.0 * np.pi))  # Wrapped to [-pi, pi].
    advance = expected + deviation
    phase = np.angle(spec[:, :1]) + np.concatenate(
        [np.zeros_like(advance[:, :1]), np.cumsum(advance[:, :-1], axis=1)], axis=1
    )
    _, stretched = scipy.signal.istft(
        magnitude * np.exp(1j * phase), nperseg=N_FFT, noverlap=N_FFT - HOP
    )
    return _fit(stretched, out_len)


def _fit(x: np.ndarray, samples: int) -> np.ndarray:
    """x cut or zero-padded at the end to `samples`."""
    return x[:samples] if len(x) >= samples else np.pad(x, (0, samples - len(x)))


def shift_pitch(audio: np.ndarray, semitones: float) -> np.ndarray:
    """float [samples] -> float32 [samples], pitch and formants moved by `semitones` (ratio
    2 ** (semitones / 12)), time-aligned with the input (module docstring). 0 returns a copy."""
    x = np.asarray(audio, np.float64)
    if semitones == 0 or len(x) == 0:
        return x.astype(np.float32)
    ratio = fractions.Fraction(2.0 ** (semitones / 12.0)).limit_denominator(64)
    padded = _fit(x, max(len(x), N_FFT))  # At least one analysis frame.
    stretched = time_stretch(padded, 1.0 / float(ratio))  # ratio times as long.
    # Resampled by 1 / ratio back to the input's length: every frequency times the ratio.
    back = scipy.signal.resample_poly(stretched, ratio.denominator, ratio.numerator)
    return _fit(back, len(x)).astype(np.float32)
