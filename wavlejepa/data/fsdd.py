"""Free Spoken Digit Dataset recordings read by file name, `{digit}_{speaker}_{take}.wav`, for
the probes: the 300-clip sample bundled in the package ("sample"), or any folder of such files
(e.g. the full FSDD's `recordings/`). Labels come from the names; splits from the takes.
"""

import functools
import os
import re

import numpy as np
from absl import logging

from wavlejepa.data import audio_folder, decode
from wavlejepa.data.pcm import SAMPLE_RATE

SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "fsdd")
SPLITS = ("train", "validation", "test")
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)$")


def fsdd_dir(data: str) -> str:
    """The folder of recordings that `data` names: "sample" or a path.

    Raises:
      FileNotFoundError: no such folder (the message says what to give).
    """
    path = SAMPLE_DIR if data == "sample" else os.path.expanduser(data)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Probe data {data!r} is not a folder: give 'sample' (the clips bundled with the "
            "package) or a folder of FSDD recordings ({digit}_{speaker}_{take}.wav)."
        )
    return os.path.normpath(path)


def take_split(take: int, max_take: int) -> str:
    """Split of a recording by its take, the same for every (digit, speaker).

    With FSDD's 50 takes: its convention (0-4 test, 5-49 train) with 5-9 held out of train for
    validation. With fewer than 10 takes (the bundled sample has 0-5): 0-1 test, 2 validation.
    """
    if max_take >= 10:
        return "test" if take < 5 else "validation" if take < 10 else "train"
    return "test" if take < 2 else "validation" if take < 3 else "train"


@functools.cache
def load_fsdd(directory: str) -> dict[str, dict]:
    """{split: {"audio": [float32 16 kHz], "digit": int32 [n], "speaker": int32 [n]}}, in
    file-name order; speakers are numbered in sorted order (the list is under "speakers")."""
    names = [(path, parse_name(path)) for path in audio_folder.list_files(directory)]
    parsed = [(path, *name) for path, name in names if name]
    if not parsed:
        raise FileNotFoundError(
            f"No {{digit}}_{{speaker}}_{{take}}.wav files in {directory}: give a folder of FSDD "
            "recordings, or 'sample' (the clips bundled with the package)."
        )
    speakers = sorted({speaker for _, _, speaker, _ in parsed})
    max_take = max(take for *_, take in parsed)
    data = {s: {"audio": [], "digit": [], "speaker": []} for s in SPLITS}
    for path, digit, speaker, take in parsed:
        try:
            clip = decode.decode_file(os.path.join(directory, path), sample_rate=SAMPLE_RATE)
        except decode.BadAudioError as e:
            logging.warning("Probe data: skipping %s", e)
            continue
        split = data[take_split(take, max_take)]
        split["audio"].append(decode.int16_to_float(clip.audio))
        split["digit"].append(digit)
        split["speaker"].append(speakers.index(speaker))
    for split in data.values():
        split["digit"] = np.asarray(split["digit"], np.int32)
        split["speaker"] = np.asarray(split["speaker"], np.int32)
    classes = {"digit": [str(d) for d in range(10)], "speaker": speakers}
    return {**data, "speakers": speakers, "classes": classes}


def parse_name(path: str) -> tuple[int, str, int] | None:
    """(digit, speaker, take) of an FSDD file `{digit}_{speaker}_{take}.wav`, else None."""
    stem, ext = os.path.splitext(os.path.basename(path))
    match = _NAME.match(stem)
    return (int(match[1]), match[2], int(match[3])) if match and ext == ".wav" else None
