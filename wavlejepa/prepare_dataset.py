r"""Builds an AudioFolder TFDS dataset from a directory of audio files, then prints a summary.

  python -m wavlejepa.prepare_dataset --audio_dir=/data/my_audio --data_dir=~/tensorflow_datasets \
      --name=my_audio

Train on it with `--config.dataset.name=my_audio --config.dataset.data_dir=~/tensorflow_datasets`.
Re-running on a prepared dataset only prints its summary; an interrupted build leaves nothing that
looks finished, so re-running also finishes it.
"""

import inspect
import os

import ml_collections
from absl import app, flags

from wavlejepa import cli, flag_kinds, runtime
from wavlejepa.data import pcm

# TFDS and the builder are imported in main(): `--help` and flag errors are instant. So a build
# option left unset (None) takes its default from the builder's signature there: one place for it.
_UNSET = "(unset: AudioFolder's default)"

_AUDIO_DIR = flag_kinds.define_input(
    "audio_dir", None, "Folder of audio files (searched recursively).", kind="folder",
    required=True,
)  # fmt: skip
_DATA_DIR = flag_kinds.define_output(
    "data_dir", None, "TFDS data_dir the dataset is written to.", kind="folder", required=True
)
_NAME = flag_kinds.define_text(
    "name", "audio_folder", "Dataset name (snake_case) in data_dir.",
    pattern=r"[a-z][a-z0-9_]*", what="a snake_case name", example="my_audio",
)  # fmt: skip
_STRICT = flags.DEFINE_bool("strict", False, "Stop at the first bad file instead of skipping it.")
_MIN_DURATION = flag_kinds.define_number(
    "min_duration", None, f"Skip files shorter than this (seconds) {_UNSET}.",
    low=0, high=3600, whole=False, unit="seconds",
)  # fmt: skip
_VALIDATION = flag_kinds.define_number(
    "validation_fraction", None, f"Share of files in 'validation' {_UNSET}.",
    low=0, high=1, whole=False, unit="a share of the files",
)  # fmt: skip
_TEST = flag_kinds.define_number(
    "test_fraction", None, f"Share of files in 'test' {_UNSET}.",
    low=0, high=1, whole=False, unit="a share of the files",
)  # fmt: skip
_SAMPLE_RATE = flag_kinds.define_number(
    "sample_rate", pcm.SAMPLE_RATE, "Rate the audio is resampled to (Hz).",
    low=1000, high=384000, unit="Hz",
)  # fmt: skip
LABEL_FROM = ("none", "folder", "csv")  # audio_folder.LABEL_FROM (it imports TFDS; tested equal).
_LABEL_FROM = flags.DEFINE_enum(
    "label_from", None, LABEL_FROM,
    f"Label from the parent folder (folder), a CSV (csv), or none {_UNSET}.",
)  # fmt: skip
_LABEL_CSV = flag_kinds.define_input(
    "label_csv", "", "label_from=csv: `relative/path,label` rows.", kind="file"
)


_BUILD_OPTIONS = {  # AudioFolder's keyword: its flag, None when unset.
    "label_from": _LABEL_FROM,
    "validation_fraction": _VALIDATION,
    "test_fraction": _TEST,
    "min_duration_seconds": _MIN_DURATION,
}


def _dataset_config(builder_class) -> ml_collections.ConfigDict:
    """The flags as the config.dataset fields that `sources` reads; a build option left unset
    takes the default of `builder_class.__init__` (AudioFolder's)."""
    defaults = inspect.signature(builder_class.__init__).parameters
    options = {
        key: defaults[key].default if flag.value is None else flag.value
        for key, flag in _BUILD_OPTIONS.items()
    }
    return ml_collections.ConfigDict(
        dict(
            name=_NAME.value,
            data_dir=_DATA_DIR.value,
            audio_dir=_AUDIO_DIR.value,
            label_csv=_LABEL_CSV.value,
            sample_rate=_SAMPLE_RATE.value,
            **options,
        )
    )


def main(argv):
    del argv
    runtime.set_up()

    from wavlejepa.data import audio_folder

    dataset_config = _dataset_config(audio_folder.AudioFolder)
    # A build that fails takes what it made of --data_dir with it (an interrupted one too).
    with cli.outputs(_DATA_DIR.value):
        _build_and_report(dataset_config)


def _build_and_report(dataset_config: ml_collections.ConfigDict) -> None:
    """Builds the dataset (or finds it built) and prints its summary."""
    from wavlejepa.data import audio_folder, decode, sources

    try:
        sources.ensure_built(dataset_config, strict=_STRICT.value)
    except decode.BadAudioError as e:
        cli.fail(f"build stopped by --strict at a bad file: {e}")
    except ValueError as e:  # Ours say what is wrong and how to fix it: no traceback needed.
        cli.fail(f"cannot prepare {dataset_config.name!r}: {e}")
    except KeyboardInterrupt:
        cli.fail("interrupted; nothing half-built is kept: run the same command to build again.")
    builder = sources.audio_folder_builder(dataset_config)
    report = builder.info.metadata["report"]
    print(audio_folder.format_report(report, os.fspath(builder.data_dir)))
    if _STRICT.value and report["skipped"]:
        cli.fail(
            f"--strict, but this dataset (built earlier) skipped files: {report['skipped']}; "
            f"they are listed in {os.path.join(builder.data_dir, audio_folder.SKIPPED_FILENAME)}."
        )


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
