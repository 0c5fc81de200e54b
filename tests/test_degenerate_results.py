"""Options and inputs that give a dataset, a split, a probe or a plot that cannot be what the user
meant are refused with the problem and its fix (nothing written), or said in one warning line.
Audio is real: FSDD recordings (`{digit}_{speaker}_{take}.wav`) from ../shared."""

import logging
import os
import shutil

import cli_helpers
import numpy as np
import pytest

from configs import default
from wavlejepa import diagnostics, plot
from wavlejepa.data import sources
from wavlejepa.evaluators import linear_probe

REPO = cli_helpers.REPO
FSDD = os.path.join(REPO, "..", "shared", "data", "fsdd", "recordings")
pytestmark = pytest.mark.skipif(not os.path.isdir(FSDD), reason="no ../shared/data/fsdd here")


def _copy(folder, names):
    """FSDD recordings `names` copied into `folder` (each name may hold a subfolder)."""
    for name in names:
        os.makedirs(os.path.dirname(folder / name), exist_ok=True)
        shutil.copy(os.path.join(FSDD, os.path.basename(name)), folder / name)
    return folder


def _dataset(tmp_path, audio, **options):
    dataset = default.get_config().dataset
    dataset.update(name="degenerate", data_dir=str(tmp_path / "tfds"), audio_dir=str(audio))
    dataset.update(options)
    return dataset


def _refused_build(tmp_path, audio, *phrases, **options):
    """ensure_built raises a DatasetError holding every phrase, and writes nothing."""
    before = cli_helpers.file_hashes(tmp_path)
    with pytest.raises(sources.DatasetError) as error:
        sources.ensure_built(_dataset(tmp_path, audio, **options))
    for phrase in phrases:
        assert phrase in str(error.value), (phrase, str(error.value))
    assert cli_helpers.file_hashes(tmp_path) == before
    assert not (tmp_path / "tfds").exists()


SIX = [f"{d}_theo_{t}.wav" for d in (0, 1) for t in (10, 11, 12)]


def test_label_from_folder_with_every_file_in_audio_dir_is_refused(tmp_path):
    audio = _copy(tmp_path / "audio", SIX)
    _refused_build(
        tmp_path, audio, "all 6 files lie directly in audio_dir", "audio_dir/CLASS/file.wav",
        label_from="folder",
    )  # fmt: skip


def test_label_from_folder_giving_every_clip_one_label_is_refused(tmp_path):
    audio = _copy(tmp_path / "audio", [f"dogs/{n}" for n in SIX])
    _refused_build(
        tmp_path, audio, "all 6 labelled clips the same label 'dogs'", "audio_dir/CLASS/",
        label_from="folder",
    )  # fmt: skip


def test_label_from_folder_giving_each_clip_its_own_label_is_refused(tmp_path):
    audio = _copy(tmp_path / "audio", [f"{n[:-4]}/{n}" for n in SIX])  # A folder per file.
    _refused_build(
        tmp_path, audio, "each of the 6 labelled clips a label of its own", "audio_dir/CLASS/",
        label_from="folder",
    )  # fmt: skip


@pytest.mark.parametrize(
    "rows, phrases",
    [
        ([f"{n},same" for n in SIX], ["all 6 labelled clips the same label 'same'"]),
        ([f"{n},{n}" for n in SIX], ["each of the 6 labelled clips a label of its own"]),
        ([f"clips/{n},{n[0]}" for n in SIX], ["labels none of the 6 files", "'clips/0_theo_10"]),
    ],
    ids=["one_label", "label_per_clip", "paths_match_no_file"],
)
def test_a_label_csv_that_tells_no_clip_apart_is_refused(tmp_path, rows, phrases):
    audio = _copy(tmp_path / "audio", SIX)
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    _refused_build(
        tmp_path, audio, *phrases, label_from="csv", label_csv=str(tmp_path / "labels.csv")
    )


def test_labels_left_one_class_by_skipped_files_are_refused_after_decoding(tmp_path):
    audio = _copy(tmp_path / "audio", [f"a/{n}" for n in SIX[:3]])
    for name in SIX[3:]:  # Folder b's files are all corrupt: only label 'a' is left.
        (tmp_path / "audio" / "b").mkdir(exist_ok=True)
        (tmp_path / "audio" / "b" / name).write_bytes(b"RIFF junk")
    _refused_build(tmp_path, audio, "the same label 'a'", label_from="folder")


def test_fractions_leaving_no_train_clip_are_refused(tmp_path):
    # These three names hash into validation and test at these fractions.
    audio = _copy(tmp_path / "audio", [f"0_george_{t}.wav" for t in (10, 11, 12)])
    _refused_build(
        tmp_path, audio, "No clip in the train split", "sent 0 of the 3 files to 'train'",
        "Lower those fractions", validation_fraction=0.45, test_fraction=0.5,
    )  # fmt: skip


def test_a_min_duration_that_skips_every_file_names_it(tmp_path):
    audio = _copy(tmp_path / "audio", SIX)
    _refused_build(
        tmp_path, audio, "{'too_short': 6}", "min_duration_seconds=5.0", "lower it",
        min_duration_seconds=5.0,
    )  # fmt: skip


def test_an_empty_held_out_split_is_said_at_build_and_when_read(tmp_path, caplog):
    audio = _copy(tmp_path / "audio", [f"0_george_{t}.wav" for t in (10, 11, 12)])
    dataset = _dataset(tmp_path, audio)  # Default fractions 0.05: train 2, validation 1, test 0.
    with caplog.at_level(logging.WARNING):
        sources.ensure_built(dataset)
    warnings = [r.getMessage() for r in caplog.records if "is empty" in r.getMessage()]
    assert warnings == [
        "Split 'test' is empty: test_fraction=0.05 sent 0 of the 3 files there (a hash of each "
        "path picks its split); training's held-out loss and the probes read it: raise "
        "test_fraction (or set it to 0 to do without)."
    ]
    with pytest.raises(sources.DatasetError, match=r"no clip in split 'test' \(built with "):
        sources.open_source(dataset, "test")


def _labels(train, validation, test, names=("a", "b", "c")):
    return {
        "train": {"label": np.asarray(train)},
        "validation": {"label": np.asarray(validation)},
        "test": {"label": np.asarray(test)},
        "classes": {"label": list(names)},
    }


@pytest.mark.parametrize(
    "data, phrase",
    [
        (_labels([0, 1], [0], []), "no clip in its ['test'] split"),
        (_labels([0, 0], [0, 1], [0, 1]), "every train clip is of one label ('a')"),
        (_labels([0, 1], [0, 1], [2, 2]), "none of the test split's 1 labels (e.g. 'c')"),
    ],
    ids=["empty_test", "one_train_class", "test_classes_unseen"],
)
def test_a_probe_without_a_meaningful_accuracy_is_refused(data, phrase):
    with pytest.raises(ValueError) as error:
        linear_probe.check_labels("labels", data, "my_audio")
    assert phrase in str(error.value) and "prepare 'my_audio' again" in str(error.value)


def test_a_probe_with_some_unseen_or_one_test_class_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        linear_probe.check_labels("labels", _labels([0, 1], [0, 1], [0, 1, 2]), "my_audio")
        linear_probe.check_labels("labels", _labels([0, 1], [0, 1], [1, 1]), "my_audio")
        linear_probe.check_labels("labels", _labels([0, 1], [0, 1], [0, 1]), "my_audio")
    assert [r.getMessage() for r in caplog.records] == [
        "The 'labels' probe on my_audio: 1 of the 3 test clips are of labels never in train (c); "
        "they count as errors whatever the embeddings.",
        "The 'labels' probe on my_audio: every test clip is of one label ('b'); its accuracy is "
        "that class's recall alone.",
    ]


def test_fsdd_probes_of_one_speaker_or_one_split_are_refused_on_real_audio(tmp_path):
    one_speaker = _copy(tmp_path / "george", [f"{d}_george_{t}.wav" for d in (0, 1)
                                              for t in (0, 5, 10)])  # fmt: skip
    cfg = linear_probe.default_config()
    cfg.data = str(one_speaker)
    with pytest.raises(ValueError, match=r"every train clip is of one speaker \('george'\)"):
        linear_probe.load_task_data("fsdd_speakers", cfg)
    data, _ = linear_probe.load_task_data("fsdd_digits", cfg)  # Two digits: a real probe.
    assert [len(data[s]["audio"]) for s in linear_probe.SPLITS] == [2, 2, 2]
    cfg.data = str(_copy(tmp_path / "low_takes", [f"{d}_theo_{t}.wav" for d in (0, 1)
                                                  for t in (0, 1)]))  # fmt: skip
    with pytest.raises(ValueError, match=r"no clip in its \['train', 'validation'\] split: FSDD"):
        linear_probe.load_task_data("fsdd_digits", cfg)


def test_pca_of_one_clip_is_refused_and_of_identical_clips_said(tmp_path, caplog):
    with pytest.raises(ValueError, match="two or more embeddings"):
        plot.pca_2d(np.ones((1, 8)))
    one = _copy(tmp_path / "one", ["3_theo_10.wav"])
    with pytest.raises(ValueError, match=rf"--data={one} holds 1 readable FSDD recording"):
        plot.fsdd_embedding_figure(embedder=None, data=str(one))  # Refused before embedding.
    with caplog.at_level(logging.WARNING):
        points = plot.pca_2d(np.tile(np.arange(8.0), (5, 1)))
        plot.pca_2d(np.random.default_rng(0).normal(size=(5, 8)))
    np.testing.assert_array_equal(points, np.zeros((5, 2)))
    assert [r.getMessage() for r in caplog.records] == [
        "All 5 embeddings are the same (a collapsed model?): the PCA shows one point."
    ]


def test_diagnostics_say_when_frames_are_identical_or_clips_of_one_speaker(caplog):
    with caplog.at_level(logging.WARNING):
        shares = diagnostics.variance_shares(np.ones((4, 10, 8)))
        diagnostics.sample_crops(3, 1600)
        diagnostics.sample_crops(7, 1600)  # george and jackson: no warning.
    assert np.isnan(shares["position_share"]) and np.isnan(shares["clip_share"])
    assert [r.getMessage() for r in caplog.records] == [
        "Every frame embedding of the 4 clips is the same (a collapsed model): position and "
        "clip shares are undefined (nan).",
        "The first 3 bundled clips (in file-name order: digit, speaker, take) are all george's "
        "takes of one digit: clip_share compares those alone; a larger --num_clips spans more "
        "speakers and digits.",
    ]


def test_the_tools_refuse_in_one_line_and_write_nothing(tmp_path):
    audio = _copy(tmp_path / "audio", [f"dogs/{n}" for n in SIX])
    before = cli_helpers.file_hashes(tmp_path)
    result = cli_helpers.run_module(
        "wavlejepa.prepare_dataset", f"--audio_dir={audio}", f"--data_dir={tmp_path / 'tfds'}",
        "--label_from=folder",
    )  # fmt: skip
    cli_helpers.assert_refused(result, "error: cannot prepare", "the same label 'dogs'")
    assert [line[:7] for line in result.stderr.splitlines() if "error" in line] == ["error: "]
    assert cli_helpers.file_hashes(tmp_path) == before and not (tmp_path / "tfds").exists()

    one_speaker = _copy(tmp_path / "george", [f"{d}_george_{t}.wav" for d in (0, 1)
                                              for t in (0, 5, 10)])  # fmt: skip
    output = tmp_path / "results.json"
    before = cli_helpers.file_hashes(tmp_path)
    result = cli_helpers.run_module(
        "wavlejepa.evaluate", "--baseline=logmel", "--eval=fsdd_speakers",
        f"--data={one_speaker}", f"--output={output}",
    )  # fmt: skip
    cli_helpers.assert_refused(result, "error: The 'fsdd_speakers' probe", "one speaker")
    assert cli_helpers.file_hashes(tmp_path) == before and not output.exists()


def test_training_refuses_a_probe_of_one_digit_before_any_step(tmp_path):
    # config.evals' data is loaded before training: a probe that cannot mean anything is one
    # line at the start, not a traceback at the first eval with a workdir half-written.
    one_digit = _copy(tmp_path / "zeros", [f"0_{s}_{t}.wav" for s in ("george", "theo")
                                           for t in (0, 5, 10)])  # fmt: skip
    before = cli_helpers.file_hashes(tmp_path)
    result = cli_helpers.run_module(
        "wavlejepa.main", "--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
        "--config.debug_dummy_data=True", f"--config.evals.fsdd_digits.data={one_digit}",
    )  # fmt: skip
    cli_helpers.assert_refused(result, "config.evals.fsdd_digits:", "one digit")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert cli_helpers.file_hashes(tmp_path) == before and not (tmp_path / "run").exists()
