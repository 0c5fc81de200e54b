"""Datasets that cannot be what their build options meant: labels that tell no clip apart, a
train split without a clip, a held-out split left empty. Each check gives the problem and its fix
in one sentence ("" when there is none); the builder refuses or warns with it."""

import collections
import os

from wavlejepa.data import decode

SPLITS = ("train", "validation", "test")


def is_audio_path(path: str) -> bool:
    """Whether a file could become a clip (its extension is one we decode)."""
    return os.path.splitext(path)[1].lower() in decode.AUDIO_EXTENSIONS


def label_problem(labels: list[str], label_from: str, label_csv: str = "", csv_path="", path=""):
    """Why `labels` (one per clip, "" for none) cannot be what `label_from` was meant to give, or
    "": no clip labelled, one label for every clip, or a label per clip (three or more clips,
    none sharing its label: no class could be trained on and tested on).

    csv_path, path: a path of the CSV and one of a file (to show how they differ).
    """
    if label_from == "none" or not labels:
        return ""
    counts = collections.Counter(label for label in labels if label)
    if label_from == "folder":
        fix = "put each class's files in a folder of their own (audio_dir/CLASS/file.wav)"
    else:
        fix = f"give each row of {label_csv} the class of its file"
    if not counts and label_from == "folder":
        return (
            f"label_from='folder' labels a clip by the folder it is in, but all {len(labels)} "
            f"files lie directly in audio_dir, so none has a label: {fix}, or build without "
            "label_from."
        )
    if not counts:
        return (
            f"label_csv={label_csv!r} labels none of the {len(labels)} files: its paths (e.g. "
            f"{csv_path!r}) must be relative to audio_dir, as {path!r} is."
        )
    if len(counts) == 1 and counts.total() >= 2:
        ((label, count),) = counts.items()
        return (
            f"label_from={label_from!r} gives all {count} labelled clips the same label "
            f"{label!r}, so there is nothing to tell apart: {fix}."
        )
    if len(counts) == counts.total() >= 3:
        return (
            f"label_from={label_from!r} gives each of the {len(counts)} labelled clips a label "
            f"of its own (e.g. {sorted(counts)[0]!r}), so no class has a clip to train on and "
            f"one to test on: {fix}."
        )
    return ""


def train_problem(clips: dict, files: dict, options: dict) -> str:
    """Why the train split ({split: clips} kept of {split: files} sent there) is empty, or ""."""
    if clips["train"]:
        return ""
    total = sum(files.values())
    sent = f"validation_fraction={options['validation_fraction']} and test_fraction=" + (
        f"{options['test_fraction']} sent {files['train']} of the {total} files to 'train'"
    )
    if files["train"]:
        sent += f", and all {files['train']} were skipped"
    return (
        f"No clip in the train split: {sent}. Lower those fractions (or add files) so that "
        "training has clips; nothing was built."
    )


def empty_split_warnings(clips: dict, files: dict, options: dict) -> list[str]:
    """One line for each held-out split asked for (fraction > 0) that holds no clip."""
    lines = []
    for split in ("validation", "test"):
        fraction = options[f"{split}_fraction"]
        if fraction > 0 and not clips[split]:
            sent = f"{files[split]} of the {sum(files.values())} files"
            lines.append(
                f"Split {split!r} is empty: {split}_fraction={fraction} sent {sent} there"
                + (", all skipped" if files[split] else "")
                + " (a hash of each path picks its split); "
                f"training's held-out loss and the probes read it: raise {split}_fraction (or "
                "set it to 0 to do without)."
            )
    return lines
