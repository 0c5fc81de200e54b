"""Tests of wavlejepa/data/decode.py: every skip reason, resampling and downmixing vs scipy."""

import math
import os
import struct

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from wavlejepa.data import decode, transforms


def _tone(n: int, rate: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def _expected_int16(path: str, rate_out: int = 16_000) -> np.ndarray:
    """Independent reference: float64 read, channel mean, scipy resample_poly, int16 rounding."""
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    g = math.gcd(rate, rate_out)
    y = scipy.signal.resample_poly(data.mean(axis=1), rate_out // g, rate // g)
    return np.clip(np.round(y * 32768), -32768, 32767).astype(np.int16)


def test_8k_int16_upsampled_to_16k(tmp_path):
    path = str(tmp_path / "a.wav")
    sf.write(path, _tone(8000, 8000), 8000, subtype="PCM_16")
    clip = decode.decode_file(path)
    assert clip.audio.dtype == np.int16
    assert clip.audio.shape == (16_000,)  # 8000 * 16000 / 8000
    assert clip.original_sample_rate == 8000
    assert clip.duration_seconds == pytest.approx(1.0)
    np.testing.assert_array_equal(clip.audio, _expected_int16(path))


def test_stereo_44k_downmixed_and_resampled(tmp_path):
    path = str(tmp_path / "s.flac")
    n = 44_100 + 37  # Not a multiple of 441: exercises the ceil in the output length.
    left, right = _tone(n, 44_100, 440.0), _tone(n, 44_100, 1000.0, amp=0.5)
    sf.write(path, np.stack([left, right], axis=1), 44_100, subtype="PCM_16")
    clip = decode.decode_file(path)
    assert clip.audio.shape == (math.ceil(n * 160 / 441),)  # gcd(44100, 16000) = 100.
    assert clip.original_sample_rate == 44_100
    np.testing.assert_array_equal(clip.audio, _expected_int16(path))
    # The downmix is the channel mean, not one channel: compare with the left channel alone.
    left_only = _expected_int16_mono(left, 44_100)
    assert np.abs(clip.audio.astype(int) - left_only).max() > 1000


def _expected_int16_mono(x: np.ndarray, rate: int) -> np.ndarray:
    g = math.gcd(rate, 16_000)
    y = scipy.signal.resample_poly(x.astype(np.float64), 16_000 // g, rate // g)
    return np.clip(np.round(y * 32768), -32768, 32767).astype(int)


def test_16k_float_passes_through_and_clips_full_scale(tmp_path):
    path = str(tmp_path / "f.wav")
    x = _tone(1600, 16_000, amp=0.5)
    x[:3] = [1.5, -1.5, 1.0]
    sf.write(path, x, 16_000, subtype="FLOAT")
    audio = decode.decode_file(path).audio
    np.testing.assert_array_equal(audio[:3], [32767, -32768, 32767])
    np.testing.assert_array_equal(audio[3:], np.round(x[3:].astype(np.float64) * 32768))


def test_wav_declared_frames_reads_the_header(tmp_path):
    path = str(tmp_path / "a.wav")
    sf.write(path, np.zeros((1234, 2), np.float32), 8000, subtype="PCM_16")
    assert decode.wav_declared_frames(path) == 1234
    data = open(path, "rb").read()
    data_at = data.index(b"data")
    assert struct.unpack("<I", data[data_at + 4 : data_at + 8])[0] == 1234 * 4


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("notes.txt", lambda p: open(p, "w").write("hello"), "unknown_extension"),
        ("empty.wav", lambda p: open(p, "wb").close(), "empty_file"),
        ("garbage.wav", lambda p: open(p, "wb").write(b"RIFF\x00\x01" + bytes(100)), "corrupt"),
        ("zero.wav", lambda p: sf.write(p, np.zeros(0, np.float32), 16_000), "zero_length"),
        ("silent.flac", lambda p: sf.write(p, np.zeros(8000, np.float32), 16_000), "silent"),
        # Peak below half an int16 step: silent once stored, though not exactly zero as float.
        (
            "hush.wav",
            lambda p: sf.write(p, np.full(8000, 1e-6, np.float32), 16_000, subtype="FLOAT"),
            "silent",
        ),
        ("short.wav", lambda p: sf.write(p, _tone(799, 8000), 8000), "too_short"),
    ],
)
def test_bad_file_reasons(tmp_path, name, make, reason):
    path = str(tmp_path / name)
    make(path)
    with pytest.raises(decode.BadAudioError) as info:
        decode.decode_file(path, min_duration_seconds=0.1)
    assert info.value.reason == reason
    assert info.value.path == path and path in str(info.value)


def test_truncated_wav_is_caught_though_libsndfile_reads_it(tmp_path):
    full, cut = str(tmp_path / "full.wav"), str(tmp_path / "cut.wav")
    sf.write(full, _tone(8000, 8000), 8000, subtype="PCM_16")
    data = open(full, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    assert len(sf.read(cut)[0]) == (len(data) // 2 - 44) // 2  # libsndfile alone says nothing.
    with pytest.raises(decode.BadAudioError, match="3989 of 8000 frames") as info:
        decode.decode_file(cut)
    assert info.value.reason == "truncated"


def test_truncated_flac_is_corrupt(tmp_path):
    full, cut = str(tmp_path / "full.flac"), str(tmp_path / "cut.flac")
    sf.write(full, _tone(16_000, 16_000), 16_000)
    data = open(full, "rb").read()
    open(cut, "wb").write(data[: len(data) // 2])
    with pytest.raises(decode.BadAudioError) as info:
        decode.decode_file(cut)
    assert info.value.reason == "corrupt"  # libsndfile: "flac decoder lost sync".
    assert "cut.flac" in str(info.value)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_float_wav(tmp_path, value):
    path = str(tmp_path / "nan.wav")
    x = _tone(16_000, 16_000)
    x[123] = value
    sf.write(path, x, 16_000, subtype="FLOAT")
    with pytest.raises(decode.BadAudioError) as info:
        decode.decode_file(path)
    assert info.value.reason == "non_finite"


def test_broken_link_is_unreadable(tmp_path):
    path = str(tmp_path / "link.wav")
    os.symlink(str(tmp_path / "missing.wav"), path)
    with pytest.raises(decode.BadAudioError) as info:
        decode.decode_file(path)
    assert info.value.reason == "unreadable"


def test_int16_round_trip_with_the_pipeline_reader():
    x = np.array([-32768, -1, 0, 1, 32767], np.int16)
    for stored in (x, x.astype(np.int64)):  # Ours are int16; TFDS catalog audio is often int64.
        f = transforms.ToFloat().map({"audio": stored})["audio"]
        assert f.dtype == np.float32 and f.min() == -1.0 and f.max() < 1.0
        np.testing.assert_array_equal(decode.to_int16(f), x)


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_compressed_formats(tmp_path, fmt):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot read {fmt}")
    path = str(tmp_path / f"a.{fmt.lower()}")
    sf.write(path, _tone(22_050, 22_050), 22_050, format=fmt)
    clip = decode.decode_file(path)
    assert clip.original_sample_rate == 22_050
    assert clip.audio.shape == (math.ceil(sf.info(path).frames * 16_000 / 22_050),)
    assert clip.duration_seconds == pytest.approx(1.0, abs=0.1)
    # Decoders output float: read as float32 (ours) or float64 (reference), rounding may differ.
    np.testing.assert_allclose(clip.audio, _expected_int16(path), rtol=0, atol=1)


def test_keep_float_keeps_what_int16_would_round_away(tmp_path):
    # A float WAV whose samples are far below one int16 step: stored datasets call it silent,
    # embedding reads it as it is.
    path = str(tmp_path / "quiet.wav")
    quiet = (1e-6 * np.sin(np.arange(4000) / 7.0)).astype(np.float32)
    sf.write(path, quiet, 16_000, subtype="FLOAT")
    clip = decode.decode_file(path, keep_float=True, allow_silent=True)
    assert clip.audio.dtype == np.float32
    np.testing.assert_array_equal(clip.audio, quiet)
    with pytest.raises(decode.BadAudioError, match="silent"):
        decode.decode_file(path)
