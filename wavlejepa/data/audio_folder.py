"""TFDS builder `AudioFolder`: a directory tree of audio files -> 16 kHz int16 array_record splits.

Bad files are skipped, counted by reason and listed in `skipped.tsv` beside the dataset (or, with
`strict=True`, the first one stops the build); TFDS writes into a temporary folder and renames it
only when every split is complete, so an interrupted build never looks finished.

  builder = audio_folder.builder_class("fsdd")(audio_dir="fsdd/recordings", data_dir="/tmp/tfds")
  builder.download_and_prepare()
  source = builder.as_data_source(split="train")  # Random access: source[i]["audio"] int16.
"""

import csv
import functools
import hashlib
import itertools
import os
import types

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from wavlejepa.data import decode, degenerate, pcm

LABEL_FROM = ("none", "folder", "csv")
SPLITS = ("train", "validation", "test")
SKIPPED_FILENAME = "skipped.tsv"
_OPTION_KEYS = (
    "label_from",
    "validation_fraction",
    "test_fraction",
    "min_duration_seconds",
    "sample_rate",
)


class DatasetError(ValueError):
    """A dataset problem the user can fix (no usable audio, a dataset missing or built from other
    files or options); the message names it and the fix, and a command prints it as one line."""


def split_of(relative_path: str, validation_fraction: float, test_fraction: float) -> str:
    """Split of a file, from a hash of its relative path: stable across runs and machines."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64  # Uniform in [0, 1).
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def list_files(audio_dir: str, exclude: str = "") -> list[str]:
    """Every file under audio_dir (whatever its extension), as sorted relative POSIX paths.

    Links to folders outside audio_dir are followed; links within it (duplicates, cycles) are not.
    """
    top, paths, seen = os.path.realpath(audio_dir), [], set()
    for root, dirs, names in os.walk(audio_dir, followlinks=True):
        real = os.path.realpath(root)
        inside = real == top or real.startswith(top + os.sep)
        if real in seen or (os.path.islink(root) and inside):
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in names:
            full = os.path.join(root, name)
            if exclude and os.path.abspath(full) == os.path.abspath(exclude):
                continue
            paths.append(os.path.relpath(full, audio_dir).replace(os.sep, "/"))
    return sorted(paths)


def read_label_csv(path: str) -> dict[str, str]:
    """`relative/path.wav,label` rows (an optional `path,label` header row) -> {path: label}."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    bad = [row for row in rows if len(row) != 2]
    if bad:
        raise DatasetError(f"{path}: expected rows of `path,label`, got {bad[0]!r}: fix that row.")
    return {p.strip(): label.strip() for p, label in rows}


class AudioFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Audio files under `audio_dir` as int16 clips at `sample_rate`, with their metadata.

    Not in the TFDS registry: a prepared one is read back from its files by name
    (`tfds.data_source(name, data_dir=...)`), so the same class serves any number of folders, each
    under its own name (`builder_class(name)`).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(
        self,
        *,
        audio_dir: str = "",
        label_from: str = "none",
        label_csv: str = "",
        validation_fraction: float = 0.05,
        test_fraction: float = 0.05,
        min_duration_seconds: float = 0.1,
        sample_rate: int = pcm.SAMPLE_RATE,
        strict: bool = False,
        **kwargs,
    ):
        """audio_dir is needed only to build; `data_dir` (in kwargs) is where it is written."""
        if label_from not in LABEL_FROM:
            raise DatasetError(f"label_from={label_from!r}; choose one of {LABEL_FROM}.")
        if label_from == "csv" and not label_csv:
            raise DatasetError("label_from='csv' needs label_csv (a `path,label` file).")
        if min(validation_fraction, test_fraction) < 0 or validation_fraction + test_fraction >= 1:
            raise DatasetError(
                f"validation_fraction={validation_fraction} and test_fraction={test_fraction} "
                "must be >= 0 and leave a non-empty train split (sum < 1)."
            )
        self.audio_dir, self.label_csv, self.strict = audio_dir, label_csv, strict
        self.options = dict(
            label_from=label_from,
            validation_fraction=float(validation_fraction),
            test_fraction=float(test_fraction),
            min_duration_seconds=float(min_duration_seconds),
            sample_rate=int(sample_rate),
        )
        self.report = {}  # Filled by a build: what metadata.json's "report" holds.
        kwargs.setdefault("file_format", tfds.core.FileFormat.ARRAY_RECORD)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Audio files of a folder, mono, resampled; see wavlejepa/data.",
            features=tfds.features.FeaturesDict(
                {
                    "audio": tfds.features.Audio(
                        shape=(None,), dtype=np.int16, sample_rate=self.options["sample_rate"]
                    ),
                    "path": tfds.features.Text(),  # Relative to audio_dir, POSIX separators.
                    "stem": tfds.features.Text(),  # File name without extension (FSDD: 3_theo_7).
                    "label": tfds.features.Text(),  # From label_from; "" when none.
                    "duration_seconds": tfds.features.Tensor(shape=(), dtype=np.float32),
                    "original_sample_rate": tfds.features.Tensor(shape=(), dtype=np.int32),
                }
            ),
            supervised_keys=None,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the audio is local.
        if not self.audio_dir or not os.path.isdir(self.audio_dir):
            raise FileNotFoundError(f"audio_dir={self.audio_dir!r} is not a directory.")
        label_csv = self.label_csv if self.options["label_from"] == "csv" else ""
        labels = read_label_csv(label_csv) if label_csv else {}
        by_split = {split: [] for split in SPLITS}
        for path in list_files(self.audio_dir, exclude=label_csv):
            split = split_of(
                path, self.options["validation_fraction"], self.options["test_fraction"]
            )
            by_split[split].append(path)
        # Labels and splits as the file names give them, checked before any file is decoded,
        # then (`_download_and_prepare`) as the files that decoded give them.
        audio = {
            s: [p for p in paths if degenerate.is_audio_path(p)] for s, paths in by_split.items()
        }
        self._files = {split: len(paths) for split, paths in by_split.items()}
        self._csv_labels, self._labels = labels, []  # _labels: of the clips written.
        self._example = next((p for s in SPLITS for p in audio[s]), "")
        if self._example:
            self._check([self._label(p, labels) for s in SPLITS for p in audio[s]],
                        {s: len(paths) for s, paths in audio.items()})  # fmt: skip
        self.report = dict(
            files_read=sum(len(paths) for paths in by_split.values()),
            clips={split: 0 for split in SPLITS},
            seconds={split: 0.0 for split in SPLITS},
            skipped={},
            unlabelled=0,
            skipped_files=[],
        )
        generators = {}
        for split, paths in by_split.items():
            clips = self._good_clips(split, paths)
            # TFDS refuses a split with no examples: decode up to the first good clip now, and
            # leave out a split whose files are all bad (they are still counted and listed).
            first = next(clips, None)
            if first is not None:
                generators[split] = self._generate_examples(itertools.chain([first], clips), labels)
        if not generators:
            fix = (
                f"Every file is shorter than min_duration_seconds="
                f"{self.options['min_duration_seconds']} (prepare_dataset --min_duration): "
                "lower it below the clips' length"
                if set(self.report["skipped"]) == {"too_short"}
                else "Give a folder of readable audio files "
                f"({', '.join(sorted(decode.AUDIO_EXTENSIONS))})"
            )
            raise DatasetError(
                f"No usable audio in {self.audio_dir}: all {self.report['files_read']} files "
                f"were skipped ({self.report['skipped']}); nothing was built. {fix}."
            )
        return generators

    def _label(self, path: str, labels: dict[str, str]) -> str:
        """The clip's label ("" for none): its folder (not audio_dir itself), or its CSV row."""
        if self.options["label_from"] == "folder":
            return os.path.basename(os.path.dirname(path))
        if self.options["label_from"] == "csv":
            return labels.get(path, "")
        return ""

    def _check(self, clip_labels: list[str], clips: dict) -> None:
        """Raises DatasetError for labels that tell no clip apart or a train split without a clip
        (`clips`: {split: count})."""
        csv_path = next(iter(self._csv_labels), "")
        problem = degenerate.label_problem(
            clip_labels, self.options["label_from"], self.label_csv, csv_path, self._example
        ) or degenerate.train_problem(clips, self._files, self.options)
        if problem:
            raise DatasetError(problem)

    def _good_clips(self, split: str, paths: list[str]):
        """Yields (path, DecodedClip) of the good files; counts and lists the bad ones."""
        for path in paths:
            try:
                clip = decode.decode_file(
                    os.path.join(self.audio_dir, path),
                    sample_rate=self.options["sample_rate"],
                    min_duration_seconds=self.options["min_duration_seconds"],
                )
            except decode.BadAudioError as e:
                if self.strict:
                    raise decode.BadAudioError(path, e.reason, e.detail) from e
                self.report["skipped"][e.reason] = self.report["skipped"].get(e.reason, 0) + 1
                self.report["skipped_files"].append((path, e.reason))
                continue
            self.report["clips"][split] += 1
            self.report["seconds"][split] += clip.duration_seconds
            yield path, clip

    def _generate_examples(self, clips, labels: dict[str, str]):
        for path, clip in clips:
            label = self._label(path, labels)
            self._labels.append(label)
            if not label and self.options["label_from"] != "none":
                self.report["unlabelled"] += 1
            yield (
                path,
                {
                    "audio": clip.audio,
                    "path": path,
                    "stem": os.path.splitext(os.path.basename(path))[0],
                    "label": label,
                    "duration_seconds": np.float32(clip.duration_seconds),
                    "original_sample_rate": np.int32(clip.original_sample_rate),
                },
            )

    # TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and
    # prepared" to stdout; nothing is downloaded here, and prepare_dataset prints its own summary.
    def _log_download_bytes(self) -> None:
        logging.info("Building %s from %s into %s", self.name, self.audio_dir, self.data_dir)

    def _log_download_done(self) -> None:
        logging.info("Built %s in %s", self.name, self.data_dir)

    def _download_and_prepare(self, dl_manager, download_config):
        # self.data_dir is still the temporary folder here: both files land in it before the
        # rename, so a finished dataset always has them.
        super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config)
        # Skipped files may have left one label, or none in train: TFDS removes its folder.
        self._check(self._labels, self.report["clips"])
        for warning in degenerate.empty_split_warnings(
            self.report["clips"], self._files, self.options
        ):
            logging.warning(warning)
        skipped_files = sorted(self.report.pop("skipped_files"))
        with open(os.path.join(self.data_dir, SKIPPED_FILENAME), "w", encoding="utf-8") as f:
            f.write("path\treason\n")
            f.writelines(f"{path}\t{reason}\n" for path, reason in skipped_files)
        self.info.metadata.update(
            options=self.options,
            audio_dir=os.path.abspath(self.audio_dir),
            fingerprint=folder_fingerprint(self.audio_dir, exclude=self.label_csv),
            report=self.report,
        )


@functools.cache
def builder_class(name: str) -> type[AudioFolder]:
    """AudioFolder under another dataset name (TFDS takes a builder's name from its class)."""
    if name == AudioFolder.name:
        return AudioFolder
    if not name.isidentifier() or name != name.lower():
        raise DatasetError(f"Dataset name {name!r} must be snake_case (e.g. 'fsdd_sample').")
    class_name = "".join(part.capitalize() for part in name.split("_")) or "AudioFolder"
    return types.new_class(
        class_name,
        (AudioFolder,),
        {"skip_registration": True},
        lambda ns: ns.update(name=name, __module__=__name__),
    )


def folder_fingerprint(audio_dir: str, exclude: str = "") -> str:
    """A hash of the names and sizes of every file under audio_dir: it changes when files are
    added, removed, renamed or rewritten to another size."""
    digest = hashlib.sha256()
    for path in list_files(audio_dir, exclude=exclude):
        try:
            size = os.stat(os.path.join(audio_dir, path)).st_size
        except OSError:
            size = -1
        digest.update(f"{path}\t{size}\n".encode())
    return digest.hexdigest()[:16]


def source_mismatch(metadata: dict, audio_dir: str, exclude: str = "") -> str:
    """Why a prepared dataset was not built from the files now in audio_dir, or "" if it was.

    The fingerprint (file names and sizes) decides: the same files in another place (a moved
    checkout, another install of the bundled sample) are the same data. A dataset built before
    fingerprints were recorded falls back to comparing the folder's path.
    """
    built_from, here = metadata.get("audio_dir"), os.path.abspath(audio_dir)
    fingerprint = metadata.get("fingerprint")
    if fingerprint:
        if fingerprint == folder_fingerprint(audio_dir, exclude=exclude):
            return ""
        if built_from and built_from != here:
            return f"it was built from {built_from}, not {here}"
        return f"the files in {here} changed since it was built"
    if built_from and built_from != here:
        return f"it was built from {built_from}, not {here}"
    return ""


def options_mismatch(metadata: dict, options: dict) -> dict:
    """{key: (built, wanted)} for the build options a prepared dataset disagrees on."""
    built = dict(metadata.get("options", {}))
    return {k: (built.get(k), options[k]) for k in _OPTION_KEYS if built.get(k) != options[k]}


def format_report(report: dict, dataset_dir: str) -> str:
    """Human summary of a build: files read, clips and hours per split, skips by reason."""
    clips, seconds, skipped = report["clips"], report["seconds"], report["skipped"]
    lines = [
        f"Dataset: {dataset_dir}",
        f"Files read: {report['files_read']}",
        "Clips written: "
        + ", ".join(f"{s} {clips[s]}" for s in SPLITS)
        + f" ({sum(clips.values())} in all)",
        "Hours of audio: "
        + ", ".join(f"{s} {seconds[s] / 3600:.3f}" for s in SPLITS)
        + f" ({sum(seconds.values()) / 3600:.3f} in all)",
    ]
    if skipped:
        by_reason = ", ".join(f"{r} {skipped[r]}" for r in decode.REASONS if r in skipped)
        lines.append(
            f"Files skipped: {sum(skipped.values())} ({by_reason}), listed in "
            f"{os.path.join(dataset_dir, SKIPPED_FILENAME)}"
        )
    else:
        lines.append("Files skipped: 0")
    if report.get("unlabelled"):
        lines.append(f"Clips without a label (label ''): {report['unlabelled']}")
    return "\n".join(lines)
