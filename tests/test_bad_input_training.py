"""The training command's mistakes found at run time end in one line naming the problem and the
fix: exit 2 for a config or dataset a user can fix, 3 for a run that went non-finite; no
traceback, and nothing written to the workdir or the dataset folder.

Each subprocess of wavlejepa.main costs seconds: every test here runs at most one.
"""

import os
import types

import cli_helpers
import pytest

from configs import cpu_debug

_run = cli_helpers.run_module
_assert_refused = cli_helpers.assert_refused


def _tree(folder) -> dict:
    """Every file (with its hash) and every folder, empty ones included, under `folder`."""
    folders = {os.path.relpath(root, folder) + "/" for root, _, _ in os.walk(folder)}
    return {**dict.fromkeys(folders), **cli_helpers.file_hashes(folder)}


@pytest.fixture()
def folders(tmp_path):
    """A workdir holding a file of the user's, and a data_dir that does not exist yet."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("mine")
    return types.SimpleNamespace(workdir=workdir, data_dir=tmp_path / "tfds", tmp=tmp_path)


def _main(*args, env=None):
    return _run("wavlejepa.main", *args, env=env)


def test_no_prepared_dataset_says_how_to_prepare_it_and_creates_no_workdir(tmp_path):
    workdir, data_dir = tmp_path / "new_run", tmp_path / "tfds"
    data_dir.mkdir()
    result = _main(
        "--config=configs/default.py",
        f"--config.dataset.data_dir={data_dir}",
        f"--workdir={workdir}",
    )
    _assert_refused(result, "No dataset 'audio_folder'", "python -m wavlejepa.prepare_dataset")
    assert result.stderr.startswith("error: ")
    assert not workdir.exists()  # Not even created.
    assert _tree(data_dir) == {"./": None}


def test_an_audio_dir_that_is_not_a_folder_is_refused_before_config_json(folders):
    before = _tree(folders.workdir)
    result = _main(
        "--config=configs/quickstart.py",
        "--config.dataset.audio_dir=/nonexistent",
        f"--config.dataset.data_dir={folders.data_dir}",
        f"--workdir={folders.workdir}",
    )
    _assert_refused(result, "audio_dir='/nonexistent' is not a folder", "give the folder")
    assert _tree(folders.workdir) == before  # No config.json.
    assert not folders.data_dir.exists()


def test_a_folder_of_bad_files_builds_nothing_and_writes_nothing(folders):
    audio = folders.tmp / "audio"
    audio.mkdir()
    (audio / "a.wav").write_text("junk")
    before = {"workdir": _tree(folders.workdir), "audio": _tree(audio)}
    result = _main(
        "--config=configs/quickstart.py",
        f"--config.dataset.audio_dir={audio}",
        f"--config.dataset.data_dir={folders.data_dir}",
        f"--workdir={folders.workdir}",
    )
    _assert_refused(
        result, f"No usable audio in {audio}", "{'corrupt': 1}", "readable audio files", ".wav"
    )
    assert {"workdir": _tree(folders.workdir), "audio": _tree(audio)} == before
    # No half-built dataset (not even an empty folder) is left to block the next build.
    assert not folders.data_dir.exists()


def test_a_failed_build_in_an_existing_data_dir_leaves_it_as_it_was(tmp_path):
    from wavlejepa.data import pipeline

    audio, data_dir = tmp_path / "audio", tmp_path / "tfds"
    audio.mkdir()
    data_dir.mkdir()
    (data_dir / "other_dataset.txt").write_text("kept")
    (audio / "a.wav").write_text("junk")
    dataset = cpu_debug.get_config().dataset
    dataset.audio_dir, dataset.data_dir = str(audio), str(data_dir)
    before = _tree(data_dir)
    with pytest.raises(pipeline.DatasetError, match="No usable audio"):
        pipeline.ensure_built(dataset)
    assert _tree(data_dir) == before


@pytest.mark.parametrize(
    "override, phrases",
    [
        (dict(label_from="csv", label_csv="/no/labels.csv"), ["/no/labels.csv", "not a file"]),
        (dict(validation_fraction=0.99), ["validation_fraction=0.99", "sum < 1"]),
        (dict(name="My-Audio"), ["'My-Audio'", "snake_case"]),
    ],
)
def test_build_options_a_user_can_fix_are_dataset_errors(tmp_path, override, phrases):
    from wavlejepa.data import pipeline

    dataset = cpu_debug.get_config().dataset
    dataset.audio_dir, dataset.data_dir = str(tmp_path), str(tmp_path / "tfds")
    dataset.update(override)
    with pytest.raises(pipeline.DatasetError) as raised:
        pipeline.ensure_built(dataset)
    assert all(phrase in str(raised.value) for phrase in phrases), raised.value
    assert not (tmp_path / "tfds").exists()


def test_an_absurd_peak_lr_is_refused_before_tensorflow_is_imported(folders):
    before = _tree(folders.workdir)
    result = _main(
        "--config=configs/cpu_debug.py",
        "--config.debug_dummy_data=True",
        "--config.optimizer.peak_lr=1e4",
        f"--workdir={folders.workdir}",
        env={"TF_CPP_MIN_LOG_LEVEL": "0"},  # TensorFlow's import would print its INFO lines.
    )
    _assert_refused(result, "config.optimizer.peak_lr=10000.0 must be at most 1", "4e-4")
    output = result.stdout + result.stderr
    assert "tensorflow" not in output.lower() and "oneDNN" not in output, output
    assert _tree(folders.workdir) == before


# A non-finite stop (one `error:` line, exit cli.NON_FINITE, no traceback, the good checkpoint
# kept) is tested on a real run with a NaN injected: tests/test_train.py::test_nan_loss_stops_...


def test_prepare_dataset_refuses_a_data_dir_under_a_file_before_any_work(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    (tmp_path / "afile").write_text("mine")
    before = _tree(tmp_path)
    data_dir = tmp_path / "afile" / "sub"
    result = _run("wavlejepa.prepare_dataset", f"--audio_dir={audio}", f"--data_dir={data_dir}")
    _assert_refused(result, f"--data_dir={data_dir}: {tmp_path / 'afile'} is a file", "folder")
    assert _tree(tmp_path) == before
