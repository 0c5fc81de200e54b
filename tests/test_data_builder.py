"""Tests of the AudioFolder TFDS builder and the prepare_dataset CLI, on real and broken files."""

import glob
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import tensorflow_datasets as tfds

import wavlejepa.data
from wavlejepa.data import audio_folder, decode

SAMPLE_DIR = wavlejepa.data.FSDD_SAMPLE_DIR
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_FSDD_DIR = os.path.join(REPO, "..", "shared", "data", "fsdd", "recordings")


def _tone(n, rate, freq=440.0, amp=0.3):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def _expected_int16(path):
    """Independent reference: float64 read, channel mean, scipy resample_poly, int16 rounding."""
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    g = math.gcd(rate, 16_000)
    y = scipy.signal.resample_poly(data.mean(axis=1), 16_000 // g, rate // g)
    return np.clip(np.round(y * 32768), -32768, 32767).astype(np.int16)


def _build(audio_dir, data_dir, name, **kwargs):
    builder = audio_folder.builder_class(name)(audio_dir=audio_dir, data_dir=data_dir, **kwargs)
    builder.download_and_prepare()
    return builder


def _records(name, data_dir):
    """{path: (split, record)} over every split, read back through tfds.data_source."""
    out = {}
    for split in tfds.builder(name, data_dir=data_dir).info.splits:
        source = tfds.data_source(name, data_dir=data_dir, split=split)
        for i in range(len(source)):
            record = source[i]
            out[record["path"].decode()] = (split, record)
    return out


# Every kind of bad input the builder must survive, and two odd-but-good files it must keep.
BAD_FILES = {
    "empty.wav": "empty_file",
    "truncated.wav": "truncated",
    "bad_header.wav": "corrupt",
    "nan.wav": "non_finite",
    "silent.wav": "silent",
    "notes.txt": "unknown_extension",
    "short.wav": "too_short",
    "zero.wav": "zero_length",
    "broken_link.wav": "unreadable",
}
GOOD_FILES = ("good_8k.wav", "stereo/stereo_44k.wav", "flac/good.flac")


def make_bad_dir(root):
    os.makedirs(os.path.join(root, "stereo"))
    os.makedirs(os.path.join(root, "flac"))
    p = lambda name: os.path.join(root, name)
    open(p("empty.wav"), "wb").close()
    sf.write(p("good_8k.wav"), _tone(8000, 8000), 8000, subtype="PCM_16")
    data = open(p("good_8k.wav"), "rb").read()
    open(p("truncated.wav"), "wb").write(data[: len(data) // 2])
    open(p("bad_header.wav"), "wb").write(data[:30])
    x = _tone(16_000, 16_000)
    x[100] = np.nan
    sf.write(p("nan.wav"), x, 16_000, subtype="FLOAT")
    sf.write(p("silent.wav"), np.zeros(16_000, np.float32), 16_000, subtype="PCM_16")
    stereo = np.stack([_tone(44_100, 44_100), _tone(44_100, 44_100, 1000.0, 0.5)], axis=1)
    sf.write(p("stereo/stereo_44k.wav"), stereo, 44_100, subtype="PCM_16")
    open(p("notes.txt"), "w").write("not audio")
    sf.write(p("short.wav"), _tone(400, 16_000), 16_000, subtype="PCM_16")  # 25 ms.
    sf.write(p("zero.wav"), np.zeros(0, np.float32), 16_000, subtype="PCM_16")
    sf.write(p("flac/good.flac"), _tone(20_000, 16_000), 16_000)
    os.symlink(p("missing.wav"), p("broken_link.wav"))


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = _build(
        SAMPLE_DIR, data_dir, "fsdd_sample", validation_fraction=0.1, test_fraction=0.1
    )
    return builder, data_dir, _records("fsdd_sample", data_dir)


def test_sample_build_keeps_every_file_resampled(sample_build):
    builder, _, records = sample_build
    wavs = sorted(n for n in os.listdir(SAMPLE_DIR) if n.endswith(".wav"))
    assert len(wavs) == 300
    assert sorted(records) == wavs  # README.md counted as unknown_extension, nothing lost.
    assert builder.report["skipped"] == {"unknown_extension": 1}
    for name in wavs[::37]:
        _, record = records[name]
        path = os.path.join(SAMPLE_DIR, name)
        frames = sf.info(path).frames
        assert record["audio"].dtype == np.int16 and record["audio"].shape == (2 * frames,)
        np.testing.assert_array_equal(record["audio"], _expected_int16(path))
        assert record["original_sample_rate"] == 8000
        assert record["duration_seconds"] == pytest.approx(frames / 8000, rel=1e-6)
        assert record["stem"].decode() == name[:-4] and record["label"] == b""
    info = tfds.builder("fsdd_sample", data_dir=sample_build[1]).info
    assert info.features["audio"].sample_rate == 16_000
    assert info.file_format == tfds.core.FileFormat.ARRAY_RECORD


def test_sample_splits_disjoint_hashed_and_sized(sample_build):
    builder, data_dir, records = sample_build
    by_split = {
        s: {p for p, (split, _) in records.items() if split == s}
        for s in ("train", "validation", "test")
    }
    assert sum(map(len, by_split.values())) == len(records) == 300  # Disjoint, covering.
    for split, paths in by_split.items():
        assert all(audio_folder.split_of(p, 0.1, 0.1) == split for p in paths)
        assert builder.report["clips"][split] == len(paths)
    # 300 draws at p = 0.1: mean 30, std 5.2; outside [10, 50] has probability < 1e-4.
    assert 10 <= len(by_split["validation"]) <= 50 and 10 <= len(by_split["test"]) <= 50
    skipped = open(os.path.join(data_dir, "fsdd_sample", "1.0.0", "skipped.tsv")).read()
    assert skipped == "path\treason\nREADME.md\tunknown_extension\n"


def test_split_is_deterministic_across_builds(sample_build, tmp_path):
    _, _, first = sample_build
    _build(SAMPLE_DIR, str(tmp_path), "fsdd_sample", validation_fraction=0.1, test_fraction=0.1)
    second = _records("fsdd_sample", str(tmp_path))
    assert {p: s for p, (s, _) in first.items()} == {p: s for p, (s, _) in second.items()}
    for p in list(first)[::50]:
        np.testing.assert_array_equal(first[p][1]["audio"], second[p][1]["audio"])


def test_split_of_fractions():
    paths = [f"dir/{i}.wav" for i in range(20_000)]
    splits = [audio_folder.split_of(p, 0.2, 0.1) for p in paths]
    assert splits.count("test") / len(paths) == pytest.approx(0.1, abs=0.01)
    assert splits.count("validation") / len(paths) == pytest.approx(0.2, abs=0.01)
    assert all(audio_folder.split_of(p, 0.0, 0.0) == "train" for p in paths[:100])


def test_split_of_is_pinned():
    # Changing the hash would move files between splits in every existing dataset: keep these.
    # sha256("0_george_0.wav")[:8] / 2**64 = 0.0528 < 0.1, so it is "test".
    assert [audio_folder.split_of(f"{d}_george_0.wav", 0.1, 0.1) for d in range(10)] == [
        "test", "train", "train", "test", "train", "train", "validation", "train", "validation",
        "test",
    ]  # fmt: skip


def test_bad_files_are_skipped_counted_and_listed(tmp_path):
    audio_dir, data_dir = str(tmp_path / "audio"), str(tmp_path / "tfds")
    make_bad_dir(audio_dir)
    builder = _build(
        audio_dir,
        data_dir,
        "bad_folder",
        label_from="folder",
        validation_fraction=0.3,
        test_fraction=0.3,
    )
    report = builder.report
    assert report["files_read"] == len(BAD_FILES) + len(GOOD_FILES)
    assert report["skipped"] == {reason: 1 for reason in BAD_FILES.values()}
    assert sum(report["clips"].values()) == len(GOOD_FILES)
    tsv = open(os.path.join(data_dir, "bad_folder", "1.0.0", "skipped.tsv")).read().splitlines()
    assert tsv[0] == "path\treason"
    assert sorted(tsv[1:]) == sorted(f"{p}\t{r}" for p, r in BAD_FILES.items())

    records = _records("bad_folder", data_dir)
    assert sorted(records) == sorted(GOOD_FILES)
    for path in GOOD_FILES:
        _, record = records[path]
        np.testing.assert_array_equal(
            record["audio"], _expected_int16(os.path.join(audio_dir, path))
        )
        assert record["label"].decode() == os.path.dirname(path)
    assert records["stereo/stereo_44k.wav"][1]["audio"].shape == (16_000,)  # 44,100 * 160 / 441.
    assert records["stereo/stereo_44k.wav"][1]["original_sample_rate"] == 44_100
    assert records["good_8k.wav"][1]["audio"].shape == (16_000,)
    assert records["flac/good.flac"][1]["audio"].shape == (20_000,)
    metadata = tfds.builder("bad_folder", data_dir=data_dir).info.metadata
    assert metadata["report"]["skipped"] == report["skipped"]
    assert metadata["options"]["label_from"] == "folder"


def test_list_files_follows_links_out_but_not_within(tmp_path):
    audio = tmp_path / "audio"
    for name in ("audio/real/a.wav", "audio/real/sub/b.wav", "audio/c.txt", "elsewhere/d.wav"):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        open(tmp_path / name, "w").close()
    os.symlink(audio / "real", audio / "a_duplicate")  # Sorted before "real": must not win.
    os.symlink(audio / "real", audio / "real" / "sub" / "cycle")
    os.symlink(tmp_path / "elsewhere", audio / "linked_in")
    assert audio_folder.list_files(str(audio)) == [
        "c.txt",
        "linked_in/d.wav",
        "real/a.wav",
        "real/sub/b.wav",
    ]


def test_labels_from_csv(tmp_path):
    audio_dir = str(tmp_path / "audio")
    os.makedirs(audio_dir)
    for name in ("a.wav", "b.wav", "c.wav"):
        sf.write(os.path.join(audio_dir, name), _tone(4000, 16_000), 16_000)
    csv_path = os.path.join(audio_dir, "labels.csv")  # Inside audio_dir: must not be "skipped".
    open(csv_path, "w").write("path,label\na.wav,dog\nb.wav, cat\n")
    builder = _build(
        audio_dir,
        str(tmp_path / "tfds"),
        "csv_folder",
        label_from="csv",
        label_csv=csv_path,
        validation_fraction=0.0,
        test_fraction=0.0,
    )
    records = _records("csv_folder", str(tmp_path / "tfds"))
    assert {p: r["label"].decode() for p, (_, r) in records.items()} == {
        "a.wav": "dog",
        "b.wav": "cat",
        "c.wav": "",
    }
    assert builder.report["unlabelled"] == 1 and builder.report["skipped"] == {}


def test_strict_names_the_file_and_leaves_no_dataset(tmp_path):
    audio_dir, data_dir = str(tmp_path / "audio"), str(tmp_path / "tfds")
    os.makedirs(audio_dir)
    for i in range(4):  # Good files first, so the error comes from inside TFDS's writing loop.
        sf.write(os.path.join(audio_dir, f"a{i}.wav"), _tone(4000, 16_000), 16_000)
    data = open(os.path.join(audio_dir, "a0.wav"), "rb").read()
    open(os.path.join(audio_dir, "z_truncated.wav"), "wb").write(data[: len(data) // 2])
    builder = audio_folder.builder_class("strict_folder")(
        audio_dir=audio_dir,
        data_dir=data_dir,
        strict=True,
        validation_fraction=0.0,
        test_fraction=0.0,
    )
    with pytest.raises(decode.BadAudioError, match=r"z_truncated\.wav: truncated"):
        builder.download_and_prepare()
    assert not builder.is_prepared()
    assert glob.glob(os.path.join(data_dir, "strict_folder", "*")) == []


class _Interrupted(Exception):
    pass


def test_interrupted_build_never_looks_complete_and_rerun_finishes(tmp_path, monkeypatch):
    data_dir, name = str(tmp_path), "interrupted"
    dataset_dir = os.path.join(data_dir, name)
    real_decode, test_split_calls = decode.decode_file, []

    def crash_inside_test_split(path, **kwargs):
        # Train and validation are written by then: the temp folder holds real array_record files.
        if audio_folder.split_of(os.path.relpath(path, SAMPLE_DIR), 0.05, 0.05) == "test":
            test_split_calls.append(path)
            if len(test_split_calls) == 2:  # The 1st is decoded before generation starts.
                # Keep a copy of the half-written temp folder, as a SIGKILL would have left it.
                (partial,) = glob.glob(os.path.join(dataset_dir, "incomplete.*"))
                shutil.copytree(partial, os.path.join(dataset_dir, "incomplete.KILLED_1.0.0"))
                raise _Interrupted()
        return real_decode(path, **kwargs)

    monkeypatch.setattr(decode, "decode_file", crash_inside_test_split)
    with pytest.raises(_Interrupted):
        _build(SAMPLE_DIR, data_dir, name)
    assert os.listdir(dataset_dir) == ["incomplete.KILLED_1.0.0"]
    partial_files = os.listdir(os.path.join(dataset_dir, "incomplete.KILLED_1.0.0"))
    assert f"{name}-train.array_record-00000-of-00001" in partial_files
    assert not audio_folder.builder_class(name)(data_dir=data_dir).is_prepared()
    with pytest.raises(tfds.core.registered.DatasetNotFoundError):
        tfds.data_source(name, data_dir=data_dir, split="train")

    monkeypatch.setattr(decode, "decode_file", real_decode)
    builder = _build(SAMPLE_DIR, data_dir, name)
    assert sum(builder.report["clips"].values()) == 300
    assert len(_records(name, data_dir)) == 300


def test_cli_builds_and_prints_summary(tmp_path):
    audio_dir, data_dir = str(tmp_path / "audio"), str(tmp_path / "tfds")
    make_bad_dir(audio_dir)
    cmd = [
        sys.executable,
        "-m",
        "wavlejepa.prepare_dataset",
        f"--audio_dir={audio_dir}",
        f"--data_dir={data_dir}",
        "--name=cli_folder",
        "--validation_fraction=0.3",
        "--test_fraction=0.3",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
    out = run.stdout
    assert "\x1b[" not in run.stdout + run.stderr  # Piped: no progress bars' escape codes.
    assert "Downloading" not in run.stdout + run.stderr and "libtpu" not in run.stderr
    assert f"Files read: {len(BAD_FILES) + len(GOOD_FILES)}" in out
    assert "(3 in all)" in out  # Clips written.
    assert "Hours of audio:" in out
    assert f"Files skipped: {len(BAD_FILES)} (unknown_extension 1, unreadable 1" in out
    assert os.path.exists(os.path.join(data_dir, "cli_folder", "1.0.0", "skipped.tsv"))

    strict = subprocess.run(
        cmd[:-3] + ["--name=cli_strict", "--strict"], capture_output=True, text=True, cwd=REPO
    )
    assert strict.returncode == 2
    assert "build stopped by --strict at a bad file:" in strict.stderr
    assert "Traceback" not in strict.stderr
    assert not os.path.exists(os.path.join(data_dir, "cli_strict", "1.0.0"))

    # --strict on the finished dataset that skipped files: refused, the skips named.
    again = subprocess.run(cmd + ["--strict"], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2, again.stderr
    assert "skipped files" in again.stderr and "skipped.tsv" in again.stderr

    # The same name for another folder (or a changed one): refused with the fix, not reused.
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "tone.wav", _tone(8000, 16_000), 16_000)
    for audio in (str(other), audio_dir):
        if audio == audio_dir:  # The original folder, one file added since the build.
            sf.write(os.path.join(audio_dir, "new.wav"), _tone(8000, 16_000), 16_000)
        cmd_other = [c if not c.startswith("--audio_dir") else f"--audio_dir={audio}" for c in cmd]
        reuse = subprocess.run(cmd_other, capture_output=True, text=True, cwd=REPO)
        assert reuse.returncode == 2, reuse.stdout
        assert "does not match its audio_dir" in reuse.stderr and "--name" in reuse.stderr
        assert "Traceback" not in reuse.stderr

    missing = [c if not c.startswith("--audio_dir") else "--audio_dir=/no/such/dir" for c in cmd]
    missing = subprocess.run(missing, capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2
    assert "--audio_dir=/no/such/dir: no such folder" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.skipif(not os.path.isdir(FULL_FSDD_DIR), reason="no ../shared/data/fsdd here")
def test_full_fsdd_builds_all_2500(tmp_path):
    builder = _build(FULL_FSDD_DIR, str(tmp_path), "fsdd")
    assert builder.report["files_read"] == 2500 and builder.report["skipped"] == {}
    assert sum(builder.report["clips"].values()) == 2500
    total_seconds = sum(sf.info(p).duration for p in glob.glob(FULL_FSDD_DIR + "/*.wav"))
    assert sum(builder.report["seconds"].values()) == pytest.approx(total_seconds, rel=1e-9)
    info = tfds.builder("fsdd", data_dir=str(tmp_path)).info
    assert sum(s.num_examples for s in info.splits.values()) == 2500


def test_the_same_files_elsewhere_are_the_same_source(tmp_path):
    # A moved checkout or another install of the bundled sample: same names and sizes, other path.
    first, moved = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    sf.write(first / "tone.wav", _tone(8000, 16_000), 16_000)
    shutil.copytree(first, moved)
    meta = dict(audio_dir=str(first), fingerprint=audio_folder.folder_fingerprint(str(first)))
    assert audio_folder.source_mismatch(meta, str(moved)) == ""
    sf.write(moved / "more.wav", _tone(800, 16_000), 16_000)
    assert "it was built from" in audio_folder.source_mismatch(meta, str(moved))
    # Without a recorded fingerprint (an older dataset) the path decides.
    assert "it was built from" in audio_folder.source_mismatch(
        dict(audio_dir=str(first)), str(moved)
    )
