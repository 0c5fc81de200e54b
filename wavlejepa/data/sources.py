"""Random-access audio sources for grain: prepared TFDS datasets, built on first use if need be.

`ensure_built` prepares an AudioFolder dataset on first use; `open_source` opens any prepared
dataset by name (ours or a TFDS catalog one) after checking it matches `config.dataset`.
"""

import contextlib
import os
import shutil
import tempfile

import tensorflow_datasets as tfds
from absl import logging

from wavlejepa.data import audio_folder, decode, resampled
from wavlejepa.data.audio_folder import DatasetError  # noqa: F401  (part of this module's API)


def _data_dir(dataset_config) -> str | None:
    return os.path.expanduser(dataset_config.data_dir) if dataset_config.data_dir else None


def _how_to_prepare(dataset_config) -> str:
    name, data_dir = dataset_config.name, dataset_config.data_dir or "~/tensorflow_datasets"
    return (
        "Prepare it first. For a folder of audio files: "
        f"`python -m wavlejepa.prepare_dataset --audio_dir=DIR --data_dir={data_dir} "
        f"--name={name}` (or set config.dataset.audio_dir to build it on first use). "
        f"For a TFDS catalog dataset: `tfds build {name} --data_dir={data_dir} "
        "--file_format=array_record`."
    )


def audio_folder_builder(dataset_config, *, strict: bool = False) -> audio_folder.AudioFolder:
    """The AudioFolder builder that config.dataset describes (name, audio_dir, build options)."""
    with _private_tempdir():  # TFDS makes a tmp*tfds folder for a dataset not yet built.
        return audio_folder.builder_class(dataset_config.name)(
            audio_dir=os.path.expanduser(dataset_config.audio_dir),
            data_dir=_data_dir(dataset_config),
            label_from=dataset_config.label_from,
            label_csv=os.path.expanduser(dataset_config.label_csv),
            validation_fraction=dataset_config.validation_fraction,
            test_fraction=dataset_config.test_fraction,
            min_duration_seconds=dataset_config.min_duration_seconds,
            sample_rate=dataset_config.sample_rate,
            strict=strict,
        )


def ensure_built(dataset_config, *, strict: bool = False) -> None:
    """Builds the AudioFolder dataset config.dataset names when audio_dir is set and it is absent.

    With no audio_dir it only checks that the named dataset's train split opens. Call it on one host
    (process 0) before the others open the dataset: two hosts building at once would race.
    strict=True stops the build at the first bad file (decode.BadAudioError names it).

    Raises:
      DatasetError: a catalog name with audio_dir, an audio_dir that is not a folder or holds no
        usable audio, a missing label_csv, a bad build option or name, a prepared dataset built
        from other files or options, or no prepared dataset (the message says how to prepare
        it). A failed build leaves no folder behind.
    """
    if not dataset_config.audio_dir:
        open_source(dataset_config, dataset_config.split)
        return
    if dataset_config.name in tfds.list_builders(with_community_datasets=False):
        raise DatasetError(
            f"config.dataset.audio_dir is set but config.dataset.name={dataset_config.name!r} is "
            "a TFDS catalog dataset; give the folder a name of its own (e.g. 'my_audio')."
        )
    if not os.path.isdir(os.path.expanduser(dataset_config.audio_dir)):
        raise DatasetError(
            f"audio_dir={dataset_config.audio_dir!r} is not a folder: give the folder of audio "
            "files to build from."
        )
    label_csv = os.path.expanduser(dataset_config.label_csv)
    if dataset_config.label_from == "csv" and label_csv and not os.path.isfile(label_csv):
        raise DatasetError(
            f"label_csv={dataset_config.label_csv!r} is not a file: give the CSV of "
            "`relative/path,label` rows (or another label_from)."
        )
    _check_data_dir(dataset_config.data_dir)
    builder = audio_folder_builder(dataset_config, strict=strict)
    if builder.is_prepared():
        _check_prepared(builder, dataset_config)
        return
    if not audio_folder.list_files(os.path.expanduser(dataset_config.audio_dir)):
        raise DatasetError(
            f"audio_dir={dataset_config.audio_dir!r} holds no files: give the folder of audio "
            f"files to build from ({', '.join(sorted(decode.AUDIO_EXTENSIONS))}); nothing was "
            "built."
        )
    with _private_tempdir():  # What the build leaves in the system's temp goes with it.
        _build(builder)  # The builder logs what it builds, from where and to where.


@contextlib.contextmanager
def _private_tempdir():
    """Runs the block with `tempfile`'s folder set to a new one of ours, removed after it: what
    the libraries leave there goes too (TFDS's `DatasetInfo.initialize_from_bucket` makes a
    tmp*tfds folder for every builder of an unbuilt dataset and never removes it)."""
    previous, private = tempfile.tempdir, tempfile.mkdtemp(prefix="wavlejepa_build_")
    tempfile.tempdir = private
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(private, ignore_errors=True)


def _check_data_dir(data_dir: str) -> None:
    """Raises DatasetError if data_dir (where a build writes) is, or lies under, a file (local
    paths only: gs:// and other remote data_dirs are left to the storage layer)."""
    local = data_dir and "://" not in data_dir
    path = os.path.abspath(os.path.expanduser(data_dir)) if local else ""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    if path and not os.path.isdir(path):
        raise DatasetError(
            f"data_dir={data_dir!r}: {path} is a file; give a folder for the prepared dataset "
            "(it is created if missing)."
        )


def _check_prepared(builder: audio_folder.AudioFolder, dataset_config) -> None:
    """Raises DatasetError unless the prepared dataset was built from audio_dir's files as they
    are now, with the options config.dataset asks for."""
    metadata = dict(builder.info.metadata)
    label_csv = dataset_config.label_csv if dataset_config.label_from == "csv" else ""
    changed = audio_folder.source_mismatch(metadata, builder.audio_dir, label_csv)
    if changed:
        raise DatasetError(
            f"Dataset {dataset_config.name!r} in {builder.data_dir} does not match its "
            f"audio_dir: {changed}. Give this folder a name of its own "
            "(config.dataset.name / --name), or delete that dataset folder to rebuild it."
        )
    mismatch = audio_folder.options_mismatch(metadata, builder.options)
    if mismatch:
        raise DatasetError(
            f"Dataset {dataset_config.name!r} in {builder.data_dir} was built with other "
            f"options (built, wanted): {mismatch}. Delete that folder to rebuild it, or "
            "choose another config.dataset.name."
        )


def _build(builder: audio_folder.AudioFolder) -> None:
    """builder.download_and_prepare(); if it fails, the empty folders it made (data_dir, its
    downloads/ and the dataset's folder) are removed, so a failed build leaves data_dir as it was.
    TFDS itself deletes its half-written `incomplete.*` folder."""
    dataset_dir = os.path.dirname(os.fspath(builder.data_dir))  # data_dir/name/version -> name.
    root = os.path.dirname(dataset_dir)
    downloads = os.path.join(root, "downloads")
    folders = (dataset_dir, os.path.join(downloads, "extracted"), downloads, root)  # Deepest first.
    made = [path for path in folders if not os.path.exists(path)]
    while made and not os.path.exists(os.path.dirname(made[-1])):  # data_dir's missing parents.
        made.append(os.path.dirname(made[-1]))
    try:
        builder.download_and_prepare()
    except BaseException:
        for path in made:  # A folder holding anything is kept.
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
        raise


def _open_builder(dataset_config) -> tfds.core.DatasetBuilder:
    """The named dataset's builder (from code or, for ours, from its files)."""
    try:
        return tfds.builder(dataset_config.name, data_dir=_data_dir(dataset_config))
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DatasetError(
            f"No dataset {dataset_config.name!r} in data_dir {dataset_config.data_dir!r}. "
            + _how_to_prepare(dataset_config)
        ) from e


def open_source(dataset_config, split: str):
    """A random-access source of the named prepared dataset's split (records are dicts).

    Raises:
      DatasetError: the dataset is missing or unprepared (the message says how to prepare it), has
        no random-access files or no such split, or has no `audio_key` feature. A dataset at
        another rate than config.dataset.sample_rate is resampled as it is read.
    """
    builder = _open_builder(dataset_config)
    info, name, key = builder.info, dataset_config.name, dataset_config.audio_key
    if key not in info.features:
        raise DatasetError(
            f"Dataset {name!r} has no feature {key!r} (config.dataset.audio_key); it has "
            f"{sorted(info.features)}."
        )
    rate = getattr(info.features[key], "sample_rate", None)
    if rate is None:
        logging.warning(
            "%s: feature %r states no sample rate; assuming %d Hz.",
            name,
            key,
            dataset_config.sample_rate,
        )
    try:
        source = builder.as_data_source(split=split)
    except (ValueError, KeyError, NotImplementedError, OSError) as e:
        fraction = dict(info.metadata or {}).get("options", {}).get(f"{split}_fraction")
        if not builder.is_prepared():
            problem = f"is not prepared in {builder.data_dir}. " + _how_to_prepare(dataset_config)
        elif fraction is not None and split not in info.splits:  # An AudioFolder's empty split.
            problem = (
                f"has no clip in split {split!r} (built with {split}_fraction={fraction}; it has "
                f"{sorted(info.splits)}): prepare it under another name with a larger "
                f"{split}_fraction (or, to train, another config.dataset.eval_split, or "
                "config.dataset.eval_batches=0 for no held-out loss)."
            )
        else:
            problem = f"cannot give split {split!r} from {builder.data_dir}: {e}"
        raise DatasetError(f"Dataset {name!r} {problem}") from e
    if rate is not None and rate != dataset_config.sample_rate:
        logging.info(
            "%s is sampled at %d Hz: resampling to %d Hz as it is read.",
            name,
            rate,
            dataset_config.sample_rate,
        )
        return resampled.ResampledSource(source, key, rate, dataset_config.sample_rate)
    return source
