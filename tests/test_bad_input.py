"""A user's mistakes end in one line naming the problem and the fix: exit code, no traceback,
and nothing on disk lost or overwritten (a test a row of docs/troubleshooting.md)."""

import os
import shutil
import stat
import subprocess
import sys
import types

import cli_helpers
import jax
import numpy as np
import pytest
import soundfile as sf
import test_embed

from configs import cpu_debug, quickstart
from wavlejepa import evaluate, flag_kinds, model, model_sizes
from wavlejepa.data import decode

REPO = test_embed.REPO
FSDD = os.path.join(REPO, "wavlejepa", "data", "samples", "fsdd")


_run = cli_helpers.run_module
_hashes = cli_helpers.file_hashes
_assert_refused = cli_helpers.assert_refused


@pytest.fixture()
def one_clip(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = sorted(n for n in os.listdir(FSDD) if n.endswith(".wav"))[0]  # Bundled real speech.
    audio, rate = sf.read(os.path.join(FSDD, name))
    sf.write(folder / "clip.wav", audio, rate)
    return folder


def test_embed_output_in_a_missing_folder_is_refused_before_any_work(tmp_path, one_clip):
    result = _run(
        "wavlejepa.embed",
        f"--checkpoint={tmp_path}",  # A folder, not a model: loaded after the output's check.
        f"--input={one_clip}",
        f"--output={tmp_path / 'no' / 'such' / 'out.npz'}",
    )
    _assert_refused(result, "does not exist", "create it first")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_embed_output_in_a_read_only_folder_is_refused(tmp_path, one_clip):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    result = _run(
        "wavlejepa.embed",
        f"--checkpoint={tmp_path}",
        f"--input={one_clip}",
        f"--output={locked / 'out.npz'}",
    )
    _assert_refused(result, "not writable")


def test_embed_refuses_a_zero_batch_size(tmp_path, one_clip):
    result = _run("wavlejepa.embed", "--checkpoint=/x", f"--input={one_clip}", "--batch_size=0")
    _assert_refused(result, "--batch_size=0: must be a whole number from 1 to 4,096")


def test_embed_on_an_empty_folder_fails_and_names_it(tmp_path, checkpoint):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(
        "wavlejepa.embed",
        f"--checkpoint={checkpoint}",
        f"--input={empty}",
        f"--output={tmp_path / 'out.npz'}",
    )
    _assert_refused(result, str(empty), "holds no files")
    assert not (tmp_path / "out.npz").exists()


def test_embed_with_only_bad_files_fails_and_keeps_the_old_output(tmp_path, checkpoint):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    (bad / "empty.wav").write_bytes(b"")
    output = tmp_path / "out.npz"
    _earlier_result(output)
    before = output.read_bytes()
    result = _run(
        "wavlejepa.embed", f"--checkpoint={checkpoint}", f"--input={bad}", f"--output={output}"
    )
    _assert_refused(result, str(bad), "1 corrupt", "1 empty_file", "nothing written")
    assert output.read_bytes() == before


def _earlier_result(path):
    """An embeddings .npz as the embed command writes it (the arrays it is recognised by)."""
    with open(path, "wb") as f:
        np.savez(f, paths=np.array(["old.wav"]), clip=np.zeros((1, 4)), frames=np.zeros((2, 4)),
                 offsets=np.array([0, 2]))  # fmt: skip


@pytest.mark.parametrize("target", ["input", "other file"])
def test_embed_refuses_to_overwrite_an_input_or_a_file_it_did_not_write(
    tmp_path, checkpoint, one_clip, target
):
    (tmp_path / "notes.txt").write_text("my notes")
    output = one_clip / "clip.wav" if target == "input" else tmp_path / "notes.txt"
    before = _hashes(tmp_path)
    result = _run(
        "wavlejepa.embed", f"--checkpoint={checkpoint}", f"--input={one_clip}", f"--output={output}"
    )
    if target == "input":
        _assert_refused(result, "is one of the --input files", "would be overwritten", "new file")
    else:
        _assert_refused(result, "not an embeddings file", "would be overwritten", "new file")
    assert _hashes(tmp_path) == before


def test_embed_replaces_its_own_earlier_result_and_never_reads_it_as_audio(
    tmp_path, checkpoint, one_clip
):
    output = one_clip / "embeddings.npz"  # Inside --input: a re-run must not embed it.
    _earlier_result(output)
    result = _run(
        "wavlejepa.embed", f"--checkpoint={checkpoint}", f"--input={one_clip}", f"--output={output}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(output) as out:
        assert [os.path.basename(p) for p in out["paths"]] == ["clip.wav"]
        assert len(out["skipped_paths"]) == 0


def test_embed_writes_exactly_the_path_given_silence_included_and_skips_a_fifo(
    tmp_path, checkpoint, one_clip
):
    sf.write(one_clip / "silence.wav", np.zeros(8000), 16_000, subtype="PCM_16")
    os.mkfifo(one_clip / "pipe.wav")  # Opening it for reading would block forever.
    output = tmp_path / "embeddings"  # No .npz suffix: written as given, not as embeddings.npz.
    result = _run(
        "wavlejepa.embed",
        f"--checkpoint={checkpoint}",
        f"--input={one_clip}",
        f"--output={output}",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"into {output}." in result.stdout
    assert not (tmp_path / "embeddings.npz").exists()
    with np.load(output) as out:
        names = [os.path.basename(p) for p in out["paths"]]
        assert names == ["clip.wav", "silence.wav"]  # Silence is valid input: one row each.
        assert [os.path.basename(p) for p in out["skipped_paths"]] == ["pipe.wav"]
        assert list(out["skipped_reasons"]) == ["unreadable"]
        assert np.all(np.isfinite(out["clip"]))


def test_embed_skips_and_lists_a_file_shorter_than_one_frame(tmp_path, checkpoint, one_clip):
    sf.write(one_clip / "click.wav", 0.5 * np.ones(100), 16_000)  # 6 ms: under one 15 ms frame.
    output = tmp_path / "out.npz"
    result = _run(
        "wavlejepa.embed", f"--checkpoint={checkpoint}", f"--input={one_clip}", f"--output={output}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipped {one_clip / 'click.wav'}: too_short" in result.stderr
    assert "Skipped 1 files" in result.stdout
    with np.load(output) as out:
        assert [os.path.basename(p) for p in out["paths"]] == ["clip.wav"]
        assert [os.path.basename(p) for p in out["skipped_paths"]] == ["click.wav"]
        assert list(out["skipped_reasons"]) == ["too_short"]


@pytest.mark.parametrize("rate", ["0", "-16000"])
def test_prepare_dataset_names_a_sample_rate_below_1_before_any_work(tmp_path, one_clip, rate):
    result = _run(
        "wavlejepa.prepare_dataset",
        f"--audio_dir={one_clip}",
        f"--data_dir={tmp_path / 'tfds'}",
        f"--sample_rate={rate}",
    )
    _assert_refused(result, f"--sample_rate={rate}: must be a whole number from 1,000")
    assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("num_clips", ["0", "1"])  # 1: position share 1 whatever the model.
def test_diagnostics_refuses_fewer_than_two_clips(checkpoint, num_clips):
    result = _run("wavlejepa.diagnostics", f"--checkpoint={checkpoint}", f"--num_clips={num_clips}")
    _assert_refused(result, f"--num_clips={num_clips}: must be a whole number from 2 to 300")
    assert "nan" not in result.stdout


def test_decode_never_opens_a_fifo_and_training_still_rejects_silence(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(decode.BadAudioError, match="not a regular file"):
        decode.decode_file(str(fifo))
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(800), 16_000, subtype="PCM_16")
    with pytest.raises(decode.BadAudioError, match="silent"):
        decode.decode_file(str(silent))
    clip = decode.decode_file(str(silent), allow_silent=True)
    np.testing.assert_array_equal(clip.audio, np.zeros(800, np.int16))


@pytest.mark.parametrize(
    "args, phrases",
    [
        (["--config=configs/nope.py"], ["configs/nope.py", "No such file"]),
        (["--config=configs/cpu_debug.py", "--config.loss.sigreg_weight=abc"], ["sigreg_weight"]),
        # A misspelt key and an out-of-range value: tests/test_configs.py.
    ],
)
def test_main_config_mistakes_are_one_line(tmp_path, args, phrases):
    result = _run("wavlejepa.main", *args, f"--workdir={tmp_path / 'run'}")
    _assert_refused(result, *phrases)
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr  # The line, maybe a hint.
    assert not (tmp_path / "run").exists()


def test_main_refuses_a_file_as_workdir_and_leaves_it(tmp_path):
    workdir = tmp_path / "notes.txt"
    workdir.write_text("my notes")
    result = _run("wavlejepa.main", "--config=configs/cpu_debug.py", f"--workdir={workdir}")
    _assert_refused(result, "is a file", "give a folder")
    assert workdir.read_text() == "my notes"


def test_main_on_another_models_run_is_refused_before_anything_is_written(tmp_path, checkpoint):
    # A finished tiny run (its best/ model and config.json, the run's record of itself): the
    # check on resume must come before that record is replaced by the new model's config.
    workdir = tmp_path / "run"
    shutil.copytree(checkpoint, workdir)
    (workdir / "config.json").write_text(cpu_debug.get_config().to_json_best_effort(indent=2))
    before = _hashes(workdir)
    result = _run(
        "wavlejepa.main",
        "--config=configs/cpu_debug.py",
        "--config.model.size=small",
        "--config.debug_dummy_data=True",
        "--config.total_steps=1",  # Were it not refused: a short run, not a hang.
        f"--workdir={workdir}",
    )
    _assert_refused(result, "another shape", "nothing was written", "new --workdir", "config.json")
    assert _hashes(workdir) == before


@pytest.mark.parametrize("total_steps", [5, 3])
def test_main_on_a_finished_run_says_so_and_writes_nothing(tmp_path, total_steps):
    # A run that saved its last step, 5 (its config.json and that checkpoint): the same command
    # has nothing to do; a smaller total_steps would have rewritten config.json.
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "5").mkdir(parents=True)
    (workdir / "checkpoints" / "5" / "commit_success.txt").write_text("")
    config = cpu_debug.get_config()
    config.total_steps = 5
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    before = _hashes(workdir)
    result = _run(
        "wavlejepa.main",
        "--config=configs/cpu_debug.py",
        "--config.debug_dummy_data=True",
        f"--config.total_steps={total_steps}",
        f"--workdir={workdir}",
    )
    if total_steps == 5:
        _assert_refused(result, f"{workdir} already holds step 5 of total_steps=5", code=0)
        assert "nothing to do" in result.stdout and "Training steps" not in result.stderr
    else:
        _assert_refused(result, "already holds step 5, past total_steps=3", "nothing was written")
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert _hashes(workdir) == before
    assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints", "config.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_main_refuses_a_read_only_workdir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    result = _run("wavlejepa.main", "--config=configs/cpu_debug.py", f"--workdir={locked}/run")
    _assert_refused(result, "not writable")


def test_read_only_folders_are_refused_whoever_runs_the_checks(tmp_path, monkeypatch):
    # The two tests above skip as root (root may write anywhere): the same checks in-process,
    # with the folder reported read-only, run for every user.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        flag_kinds.os,
        "access",
        lambda p, mode: False if str(p) == str(locked) else real_access(p, mode),
    )
    cases = ((f"{locked}/run", "folder"), (str(locked), "folder"), (f"{locked}/o.npz", "file"))
    for path, kind in cases:
        assert "not writable" in flag_kinds._output_problem(path, kind), (path, kind)
    assert flag_kinds._output_problem(f"{tmp_path}/fine", "folder") == ""  # A writable parent.


def test_configs_load_from_any_folder(tmp_path):
    # configs/*.py import `configs.default`: the package installs `configs`, so a config given
    # by absolute path works outside the repo root (no PYTHONPATH), for the CLIs and for HEAR.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    config = os.path.join(REPO, "configs", "quickstart.py")
    count = subprocess.run(
        [sys.executable, "-m", "wavlejepa.param_count", f"--config={config}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert count.returncode == 0, count.stderr[-2000:]
    assert "total                  5,138,304" in count.stdout  # The small model of quickstart.
    hear = subprocess.run(
        [sys.executable, "-c", "from wavlejepa import hear; "
         f"print(hear.load_model({os.path.join(REPO, 'configs', 'cpu_debug.py')!r}).embedder.dim)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert hear.returncode == 0, hear.stderr[-2000:]
    assert hear.stdout.strip() == "64"


def test_param_count_builds_the_size_asked_for_and_names_a_missing_config():
    cfg = model_sizes.model_config("base")
    shapes = jax.eval_shape(lambda key: model.init(key, cfg), jax.random.key(0))
    base = sum(x.size for x in jax.tree.leaves(shapes))
    result = _run("wavlejepa.param_count", "--config=configs/quickstart.py",
                  "--config.model.size=base")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"total {base:>26,d}" in result.stdout  # What training builds with the same flags.
    _assert_refused(_run("wavlejepa.param_count"), "--config is required")
    _assert_refused(
        _run("wavlejepa.param_count", "--config=configs/quickstart.py", "--config.model.size=huge"),
        "model.size='huge'",
        "choose one of",
    )


def test_evaluate_random_init_builds_and_labels_the_size_asked_for():
    config = quickstart.get_config()  # The small model, with --config.model.size=tiny.
    config.model.size = "tiny"
    args = types.SimpleNamespace(config=config, baseline="random_init", checkpoint=None, seed=0)
    _, built = evaluate._frames_factory(args)
    tiny = model_sizes.model_config("tiny")
    assert model_sizes.describe(built.model) == model_sizes.describe(tiny)
    assert built.model.size == "tiny"  # The label of the result.


@pytest.mark.parametrize(
    "args, phrases",
    [
        (["--baseline=logmel", "--data=/no/such/folder"], ["/no/such/folder", "is not a folder"]),
        (
            ["--baseline=random_init", "--config=configs/quickstart.py", "--config.model.size=xl"],
            ["model.size='xl'", "choose one of"],
        ),
        (["--baseline=logmel", "--data={empty}"], ["No {digit}_{speaker}_{take}.wav files"]),
        (["--baseline=logmel", "--output={missing}/r.json"], ["does not exist", "create it"]),
        (["--baseline=logmel", "--checkpoint=."], ["contradict"]),
        (["--eval=fsdd_colours", "--baseline=logmel"], ["unknown fsdd_colours", "fsdd_digits"]),
    ],
)
def test_evaluate_mistakes_are_one_line_before_any_work(tmp_path, args, phrases):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", missing=tmp_path / "missing") for a in args]
    result = _run("wavlejepa.evaluate", *args)
    _assert_refused(result, *phrases)


def test_embed_from_a_truncated_checkpoint_is_one_line_per_checkpoint(
    tmp_path, checkpoint, one_clip
):
    # Orbax fails on the first short array file while TensorStore's other reads are in flight:
    # without runtime.quiet_closed_event_loops each printed an "Event loop is closed" traceback.
    broken = tmp_path / "run"
    shutil.copytree(checkpoint, broken)
    for root, _, names in os.walk(broken):
        if os.path.basename(root) == "d":  # ocdbt's data files: cut to half (a full disk).
            for name in names:
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(os.path.getsize(os.path.join(root, name)) // 2)
    output = tmp_path / "out.npz"
    result = _run(
        "wavlejepa.embed", f"--checkpoint={broken}", f"--input={one_clip}", f"--output={output}"
    )
    _assert_refused(result, "can be loaded", str(broken))
    assert "Event loop is closed" not in result.stderr
    lines = result.stderr.strip().splitlines()  # The error alone: it names each step's reason.
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert "<bound method" not in lines[0]  # TensorStore's repr is cut from the reason.
    assert not output.exists()
