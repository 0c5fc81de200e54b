"""The embed and evaluate tools answer a user's mistake in one line naming the problem and the
fix (exit code, no traceback, nothing on disk lost), and say what they do as they do it."""

import json
import os
import threading

import cli_helpers
import numpy as np
import pytest
import soundfile as sf
import test_embed

from configs import cpu_debug
from wavlejepa import embedding, evaluate

FSDD = os.path.join(test_embed.REPO, "wavlejepa", "data", "samples", "fsdd")

_run = cli_helpers.run_module
_hashes = cli_helpers.file_hashes
_assert_refused = cli_helpers.assert_refused


@pytest.fixture(scope="module")
def embedder():
    return embedding.Embedder.random_init(cpu_debug.get_config(), seed=0, batch_size=4)


def _clips(folder, count):
    """The first `count` bundled FSDD recordings, copied into `folder`; their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(n for n in os.listdir(FSDD) if n.endswith(".wav"))[:count]
    for name in names:
        audio, rate = sf.read(os.path.join(FSDD, name))
        sf.write(folder / name, audio, rate)
    return names


class _Bar:
    """The tqdm members `embedding.iter_files` uses, recorded: (n, total) after each move."""

    def __init__(self, total, **kwargs):
        self.total, self.n, self.moves = total, 0, []

    def update(self, n):
        self.n += n
        self.moves.append((self.n, self.total))

    def close(self):
        pass


def test_embed_progress_counts_every_file_from_the_start(tmp_path, embedder, monkeypatch):
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate((0.2, 2.0, 0.3, 0.25, 0.4)):  # 2.0 s: several windows.
        paths.append(str(tmp_path / f"{i}.wav"))
        sf.write(paths[-1], 0.1 * rng.normal(size=int(seconds * 16_000)), 16_000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")  # Skipped: still one file.
    paths.insert(1, str(tmp_path / "broken.wav"))
    bars = []
    monkeypatch.setattr(embedding, "tqdm", lambda **kw: bars.append(_Bar(**kw)) or bars[-1])
    out = list(embedding.iter_files(embedder, paths, chunk=4))
    assert [reason for _, _, reason in out] == [None, "corrupt", None, None, None, None]
    (bar,) = bars
    assert {total for _, total in bar.moves} == {6}  # The file count, before any file is done.
    done = [n for n, _ in bar.moves]
    assert done == sorted(done) and done[-1] == 6
    assert any(0 < n < 4 and n != round(n) for n in done)  # Moves within the first chunk.
    assert 4 in done  # Whole files at the end of a chunk, the skipped one counted.


@pytest.mark.parametrize("rate", [16_000.5, 44_099.9])
def test_embedder_names_a_fractional_sample_rate_and_the_fix(embedder, rate):
    with pytest.raises(ValueError, match=rf"sample_rate={rate!r}: .*whole number .*round"):
        embedder.embed([np.ones(4000)], sample_rate=rate)


def test_embedder_refuses_channels_first_stereo_with_the_downmix(embedder):
    stereo = np.random.default_rng(0).normal(size=(2, 4000))  # torchaudio.load's layout.
    with pytest.raises(ValueError, match=r"\(2, 4000\): .*\[channels, samples\].*mean\(axis=0\)"):
        embedder.embed_one(stereo)
    with pytest.raises(ValueError, match=r"Sound 0 has shape \(2, 4000\): .*mean\(axis=0\)"):
        embedder.embed([stereo])
    with pytest.raises(ValueError, match=r"stereo .* embed\(\[audio.mean\(axis=0\)\]\).*list"):
        embedder.embed(stereo)  # Two rows: stereo or two clips? Never guessed.
    with pytest.raises(ValueError, match=r"\[samples, channels\].*mean\(axis=1\)"):
        embedder.embed_one(stereo.T)  # soundfile's layout: still named.
    mono = embedder.embed_one(stereo.mean(axis=0))
    assert mono.frames.shape[1] == embedder.dim


def _earlier_clip_npz(path):
    """A per-file .npz as `embed --output_dir` writes it (the arrays it is recognised by)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, frames=np.zeros((2, 4)), timestamps=np.zeros(2), clip=np.zeros(4))


@pytest.mark.parametrize("blocker", ["a file of the user's", "a folder", "an input"])
def test_embed_output_dir_never_overwrites_what_it_did_not_write(tmp_path, blocker):
    names = _clips(tmp_path / "clips", 2)
    output_dir = tmp_path / "clips" if blocker == "an input" else tmp_path / "emb"
    target = output_dir / f"{names[1]}.npz"  # Where the second clip's .npz would go.
    if blocker == "a folder":
        (target / "keep").mkdir(parents=True)
    else:  # Inside --input, "an input" is listed as audio too: overwriting it loses it.
        target.parent.mkdir(exist_ok=True)
        target.write_text("my notes")
    before = _hashes(tmp_path)
    result = _run(
        "wavlejepa.embed",
        f"--checkpoint={tmp_path}",  # A folder, not a model: loaded after the targets' check.
        f"--input={tmp_path / 'clips'}",
        f"--output_dir={output_dir}",
    )
    what = "is a folder" if blocker == "a folder" else "is not an embeddings file of ours"
    _assert_refused(result, str(target), what, "would be overwritten", "move it aside")
    assert _hashes(tmp_path) == before


@pytest.mark.parametrize("inside", ["clips", "clips/emb"])
def test_embed_output_dir_in_the_input_replaces_only_its_earlier_npz(tmp_path, checkpoint, inside):
    names = _clips(tmp_path / "clips", 2)
    (tmp_path / "clips" / "notes.txt").write_text("my notes")  # Read as audio: skipped.
    output_dir = tmp_path / inside
    earlier = output_dir / f"{names[0]}.npz"
    _earlier_clip_npz(earlier)
    inputs = {p: h for p, h in _hashes(tmp_path / "clips").items() if not p.endswith(".npz")}
    result = _run(
        "wavlejepa.embed",
        f"--checkpoint={checkpoint}",
        f"--input={tmp_path / 'clips'}",
        f"--output_dir={output_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = _hashes(tmp_path / "clips")
    assert {p: after[p] for p in inputs} == inputs  # Every input as it was.
    assert sorted(p for p in after if p not in inputs) == sorted(
        os.path.relpath(output_dir / f"{n}.npz", tmp_path / "clips") for n in names
    )  # One .npz per clip, none of an earlier .npz; notes.txt skipped.
    with np.load(earlier) as out:
        assert out["frames"].shape[1] == 64  # Replaced by the model's (cpu_debug: 64-d).
    assert ".npz: " not in result.stderr  # An earlier result is never listed as skipped.
    assert f"skipped {tmp_path / 'clips' / 'notes.txt'}: " in result.stderr


def test_evaluate_labels_on_a_dataset_without_labels_gives_the_command_that_adds_them(tmp_path):
    from configs import default
    from wavlejepa.data import sources

    for label in ("a", "b"):  # Class folders: what the printed --label_from=folder reads.
        _clips(tmp_path / "audio" / label, 2)
    dataset = default.get_config().dataset  # As `prepare_dataset` without --label_from builds it.
    dataset.update(name="plain", data_dir=str(tmp_path / "tfds"), audio_dir=str(tmp_path / "audio"))
    sources.ensure_built(dataset)
    before = _hashes(tmp_path)
    result = _run(
        "wavlejepa.evaluate",
        "--baseline=logmel",
        "--eval=labels",
        "--data=plain",
        f"--data_dir={tmp_path / 'tfds'}",
    )
    command = (
        f"python -m wavlejepa.prepare_dataset --audio_dir={tmp_path / 'audio'} "
        f"--data_dir={tmp_path / 'tfds'} --name=plain_labelled --label_from=folder"
    )
    _assert_refused(result, "'plain' was prepared without labels", command, "--label_from=csv")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _hashes(tmp_path) == before
    flags = dict(arg[2:].split("=", 1) for arg in command.split()[3:])
    dataset.update(flags)  # What that command runs: it builds, next to the first dataset.
    sources.ensure_built(dataset)


def test_evaluate_table_puts_each_value_under_its_heading():
    record = dict(eval="fsdd_digits", model="random_init", seed=0, size="tiny", data="/d",
                  pooling="mean_std", test_accuracy=0.86666, validation_accuracy=1.0,
                  train_accuracy=0.5, weight_decay=1e-6, test_examples=100)  # fmt: skip
    title, headings = evaluate.table_header(record, 13).splitlines()
    row = evaluate.table_row(record, 13)
    assert title == "model: random_init (size tiny, seed 0)"
    for heading, value in [("test acc", "0.867"), ("val acc", "1.000"), ("train acc", "0.500"),
                           ("test clips", "100"), ("weight decay", "1e-06")]:  # fmt: skip
        end = headings.index(heading) + len(heading)
        assert row[end - len(value) : end] == value, (heading, headings, row)
    assert row.startswith("fsdd_digits ") and row.endswith("  mean_std  /d")
    assert headings.index("pooling") == row.index("mean_std")


def test_evaluate_prints_a_table_and_writes_json_to_output(tmp_path):
    from configs import default
    from wavlejepa.data import sources

    for digit in ("0", "1"):  # Two labelled folders of six clips; every split has a clip.
        names = sorted(n for n in os.listdir(FSDD) if n.startswith(f"{digit}_"))[:6]
        for name in names:
            (tmp_path / "audio" / digit).mkdir(parents=True, exist_ok=True)
            audio, rate = sf.read(os.path.join(FSDD, name))
            sf.write(tmp_path / "audio" / digit / name, audio, rate)
    dataset = default.get_config().dataset
    dataset.update(name="two_digits", data_dir=str(tmp_path / "tfds"),
                   audio_dir=str(tmp_path / "audio"), label_from="folder",
                   validation_fraction=0.3, test_fraction=0.3)  # fmt: skip
    sources.ensure_built(dataset)
    output = tmp_path / "results.json"
    result = _run(
        "wavlejepa.evaluate",
        "--baseline=logmel",
        "--eval=labels",
        "--data=two_digits",
        f"--data_dir={tmp_path / 'tfds'}",
        f"--output={output}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json.loads(output.read_text())
    assert record["eval"] == "labels" and record["test_examples"] == 6
    title, headings, row = result.stdout.splitlines()  # A table, no JSON.
    assert title == "model: logmel"
    assert headings.split()[:3] == ["eval", "test", "acc"]
    assert row.split()[:6] == [
        "labels",
        *(f"{record[k]:.3f}" for k in ("test_accuracy", "validation_accuracy", "train_accuracy")),
        "6",
        f"{record['weight_decay']:g}",
    ]


def test_only_regular_files_can_be_earlier_embeddings(tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")  # Opening it to look inside would block.
    answers = []
    looks = threading.Thread(
        target=lambda: answers.extend(
            embedding.is_embeddings_file(str(p), per_file=True)
            for p in (tmp_path / "fifo.npz", tmp_path)
        ),
        daemon=True,
    )
    looks.start()
    looks.join(timeout=10)
    assert answers == [False, False]
