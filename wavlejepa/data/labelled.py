"""Clips and labels of a prepared dataset whose records have a "label" (an AudioFolder built
with `prepare_dataset --label_from`), for the "labels" probe."""

import ml_collections
import numpy as np

from wavlejepa.data import sources, transforms
from wavlejepa.data.fsdd import SPLITS
from wavlejepa.data.pcm import SAMPLE_RATE


def load_labelled(name: str, data_dir: str = "") -> dict[str, dict]:
    """{split: {"audio": [float32 16 kHz], "label": int32 [n]}} of a prepared dataset whose
    records have a "label" (an AudioFolder built with --label_from); clips with an empty label
    are left out. The label names, sorted, are under "classes"["label"].

    Raises:
      ValueError: no such prepared dataset (the message says how to prepare it), no "label"
        feature, or no labelled clip in a split.
    """
    dataset_config = ml_collections.ConfigDict(
        dict(name=name, data_dir=data_dir, audio_key="audio", sample_rate=SAMPLE_RATE)
    )
    records = {s: sources.open_source(dataset_config, s) for s in SPLITS}
    first = records["train"][0] if len(records["train"]) else {}
    if "label" not in first:
        raise ValueError(
            f"Dataset {name!r} has no labels: build it with `python -m wavlejepa.prepare_dataset "
            "--label_from=folder` (or csv)."
        )
    text = lambda r: r["label"].decode() if isinstance(r["label"], bytes) else str(r["label"])
    rows = {s: [(text(r), r["audio"]) for r in records[s]] for s in SPLITS}
    names = sorted({label for split in rows.values() for label, _ in split if label})
    data = {}
    for split, pairs in rows.items():
        pairs = [(label, audio) for label, audio in pairs if label]
        if not pairs:
            raise ValueError(
                f"Dataset {name!r} has no labelled clip in its {split!r} split: prepare it "
                f"again under another name with labels on its clips (--label_from) and a "
                f"{split}_fraction that gives the split clips."
            )
        data[split] = {
            "audio": [transforms.to_float(audio) for _, audio in pairs],
            "label": np.asarray([names.index(label) for label, _ in pairs], np.int32),
        }
    return {**data, "classes": {"label": names}}
