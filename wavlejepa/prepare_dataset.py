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

from wavlejepa import cli, runtime
from wavlejepa.data import pcm

# TFDS and the builder are imported in main(): `--help` and flag errors are instant. So a build
# option left unset (None) takes its default from the builder's signature there: one place for it.
_UNSET = "(unset: AudioFolder's default)"

_AUDIO_DIR = flags.DEFINE_string("audio_dir", None, "Folder of audio files (searched recursively).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir the dataset is written to.")
_NAME = flags.DEFINE_string("name", "audio_folder", "Dataset name (snake_case) in data_dir.")
_STRICT = flags.DEFINE_bool("strict", False, "Stop at the first bad file instead of skipping it.")
_MIN_DURATION = flags.DEFINE_float(
    "min_duration", None, f"Skip files shorter than this (seconds) {_UNSET}."
)
_VALIDATION = flags.DEFINE_float(
    "validation_fraction", None, f"Share of files in 'validation' {_UNSET}."
)
_TEST = flags.DEFINE_float("test_fraction", None, f"Share of files in 'test' {_UNSET}.")
_SAMPLE_RATE = flags.DEFINE_integer(
    "sample_rate", pcm.SAMPLE_RATE, "Rate the audio is resampled to (Hz).", lower_bound=1
)
_LABEL_FROM = flags.DEFINE_string(
    "label_from", None,
    f"Label from the parent folder (folder), a CSV (csv), or none (audio_folder.LABEL_FROM) "
    f"{_UNSET}.",
)  # fmt: skip
_LABEL_CSV = flags.DEFINE_string("label_csv", "", "label_from=csv: `relative/path,label` rows.")
flags.mark_flags_as_required(["audio_dir", "data_dir"])


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


def _check_data_dir(path: str) -> None:
    """Fails unless --data_dir is a folder we can write in, or can be created: checked before
    TFDS is imported, so the mistake costs no time."""
    if "://" not in path:  # gs:// and other remote data_dirs are left to the storage layer.
        existing = cli.existing_ancestor(path)
        if not os.path.isdir(existing):
            cli.fail(
                f"--data_dir={path}: {existing} is a file; give a folder for the dataset (it is "
                "created if missing)."
            )
    cli.check_workdir(path, "--data_dir")


def main(argv):
    del argv
    _check_data_dir(_DATA_DIR.value)
    runtime.set_up()

    from wavlejepa.data import audio_folder, decode, sources

    dataset_config = _dataset_config(audio_folder.AudioFolder)
    if dataset_config.label_from not in audio_folder.LABEL_FROM:
        cli.fail(f"--label_from={_LABEL_FROM.value}; choose one of {audio_folder.LABEL_FROM}.")
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
