"""The time-aligned pitch shift: frequencies scaled by 2 ** (semitones / 12), timing and length
kept; checked on closed-form tones and on a real FSDD voice's fundamental."""

import glob
import os

import numpy as np
import pytest
import scipy.signal

import wavlejepa.data
from wavlejepa.data import decode, pcm, pitch

RATE = 16_000


def _peak_hz(x):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(spectrum)]


def _on_off_seconds(x):
    """Where the envelope first and last reaches half its peak."""
    envelope = np.abs(scipy.signal.hilbert(x))
    loud = np.flatnonzero(envelope > 0.5 * envelope.max())
    return loud[0] / RATE, loud[-1] / RATE


def _tone_burst(hz, samples=8160, start=0.2, stop=0.35):
    t = np.arange(samples) / RATE
    return np.where((t >= start) & (t < stop), np.sin(2 * np.pi * hz * t), 0.0)


@pytest.mark.parametrize("semitones", [-4.0, -1.5, 3.0, 5.0])
def test_tone_moves_by_the_ratio_and_stays_in_place(semitones):
    burst = _tone_burst(300.0)
    shifted = pitch.shift_pitch(burst, semitones)
    assert shifted.shape == burst.shape and shifted.dtype == np.float32
    # The ratio is rounded to a fraction of denominator <= 64 (< 0.5% off) and the FFT bins are
    # 1.96 Hz apart at 8,160 samples.
    np.testing.assert_allclose(_peak_hz(shifted), 300.0 * 2 ** (semitones / 12), rtol=0.01)
    # The burst starts and ends where it did, within a frame (10 ms), its level near the input's.
    np.testing.assert_allclose(_on_off_seconds(shifted), (0.2, 0.35), atol=0.012)
    assert 0.8 < np.abs(shifted).max() < 1.25


def test_every_partial_scales_as_formants_do():
    # Two partials a formant apart both move by the same ratio: the spectral envelope moves.
    low, high = (
        _tone_burst(200.0, start=0.05, stop=0.45),
        _tone_burst(1100.0, start=0.05, stop=0.45),
    )
    shifted = pitch.shift_pitch(low + 0.5 * high, 4.0)
    spectrum = np.abs(np.fft.rfft(shifted * np.hanning(len(shifted))))
    freqs = np.fft.rfftfreq(len(shifted), 1 / RATE)
    ratio = 2 ** (4 / 12)
    for hz in (200.0, 1100.0):
        band = np.abs(freqs - hz * ratio) < 0.1 * hz
        np.testing.assert_allclose(freqs[band][np.argmax(spectrum[band])], hz * ratio, rtol=0.01)
        # Nothing is left where the partial was.
        assert spectrum[np.argmin(np.abs(freqs - hz))] < 0.05 * spectrum[band].max()


def test_time_stretch_changes_length_not_pitch():
    tone = np.sin(2 * np.pi * 440.0 * np.arange(8000) / RATE)
    for rate in (0.8, 1.25):
        stretched = pitch.time_stretch(tone, rate)
        assert stretched.shape == (round(8000 / rate),)
        np.testing.assert_allclose(_peak_hz(stretched[600:-600]), 440.0, rtol=0.01)


def test_zero_shift_is_the_input_and_short_or_empty_audio_keeps_its_length():
    x = np.random.default_rng(0).normal(size=1000)
    np.testing.assert_array_equal(pitch.shift_pitch(x, 0.0), x.astype(np.float32))
    for n in (0, 1, 100, 511, 513):
        out = pitch.shift_pitch(np.random.default_rng(n).normal(size=n), 2.5)
        assert out.shape == (n,) and np.all(np.isfinite(out))


def _f0_hz(x, low=70.0, high=400.0):
    """Autocorrelation pitch of a voiced stretch: the lag of the highest peak in [1/high, 1/low]."""
    x = x - x.mean()
    corr = np.correlate(x, x, "full")[len(x) - 1 :]
    lags = np.arange(int(RATE / high), int(RATE / low))
    return RATE / lags[np.argmax(corr[lags])]


def test_real_voice_fundamental_moves_by_the_ratio():
    # A bundled FSDD recording (real speech): the fundamental of its loudest 60 ms moves by the
    # ratio, as an independent autocorrelation estimate measures it.
    path = sorted(glob.glob(os.path.join(wavlejepa.data.FSDD_SAMPLE_DIR, "*.wav")))[0]
    audio = pcm.int16_to_float(decode.decode_file(path).audio).astype(np.float64)  # 16 kHz.
    energy = np.convolve(audio**2, np.ones(960), "valid")
    loudest = int(np.argmax(energy))
    window = slice(loudest, loudest + 960)
    f0 = _f0_hz(audio[window])
    for semitones in (-3.0, 3.0):
        shifted = pitch.shift_pitch(audio, semitones)
        np.testing.assert_allclose(_f0_hz(shifted[window]), f0 * 2 ** (semitones / 12), rtol=0.05)
