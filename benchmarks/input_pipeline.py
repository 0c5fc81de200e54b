r"""Input-pipeline benchmark: clips/s and audio-seconds/s the grain loader delivers on this machine.

  python -m benchmarks.input_pipeline --json=/tmp/input_pipeline.json

Builds (once) an AudioFolder dataset from FSDD (the full 2,500 clips at ../shared/data/fsdd when
present, else the 300 bundled ones), then times the train loader for each worker count with the
base config's crops (2.01 s x 8 per clip, batch 512) and cpu_debug's (0.51 s x 2, batch 8).
"Audio s/s" counts the seconds of crops delivered; worker start-up is timed apart.
"""

import gc
import os
import tempfile
import time

from absl import app, flags

import wavlejepa.data
from benchmarks import common
from configs import cpu_debug, default
from wavlejepa.data import pipeline

_FULL_FSDD = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "..", "shared", "data", "fsdd", "recordings"
)
_AUDIO_DIR = flags.DEFINE_string("audio_dir", "", "Audio to build from ('' = FSDD, see above).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data_dir ('' = a temporary folder).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker counts to time.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Timed seconds per measurement (after warm-up).")
_JSON = flags.DEFINE_string("json", "", "Write the figures to this JSON file too.")
_ROW = (  # One line per run: `main`'s run dicts.
    "{crops:9s} crops {crop_seconds} s x {crops_per_clip}, batch {batch_size:3d}, {workers} "
    "workers: {clips_per_second:8.1f} clips/s, {audio_seconds_per_second:8.1f} audio s/s "
    "(start-up {startup_seconds} s, load {load_average})"
)


def measure(dataset_config, batch_size: int, seconds: float) -> dict:
    """Times one loader: start-up (first batch), then batches for about `seconds`."""
    start = time.perf_counter()
    data_iter = iter(
        pipeline.create_train_loader(
            dataset_config, batch_size=batch_size, seed=0, shard_index=0, shard_count=1
        )
    )
    next(data_iter)
    startup = time.perf_counter() - start
    batches, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or batches < 3:
        next(data_iter)
        batches += 1
    del data_iter
    gc.collect()  # Stops its worker processes before the next measurement.
    crops = batches * batch_size
    return dict(
        workers=dataset_config.num_workers,
        batch_size=batch_size,
        crop_seconds=dataset_config.crop_seconds,
        crops_per_clip=dataset_config.crops_per_clip,
        startup_seconds=round(startup, 2),
        batches=batches,
        clips_per_second=round(crops / dataset_config.crops_per_clip / elapsed, 1),
        audio_seconds_per_second=round(crops * dataset_config.crop_seconds / elapsed, 1),
    )


def main(argv):
    del argv
    audio_dir = _AUDIO_DIR.value or (
        _FULL_FSDD if os.path.isdir(_FULL_FSDD) else wavlejepa.data.FSDD_SAMPLE_DIR
    )
    data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix="wavlejepa_bench_")
    results = dict(audio_dir=os.path.abspath(audio_dir), cpus=os.cpu_count(), runs=[])
    for setting, config in (
        ("default", default.get_config()),
        ("cpu_debug", cpu_debug.get_config()),
    ):
        dataset_config = config.dataset
        dataset_config.update(name="fsdd_bench", audio_dir=audio_dir, data_dir=data_dir)
        pipeline.ensure_built(dataset_config)
        for workers in map(int, _WORKERS.value):
            dataset_config.num_workers = workers
            run = dict(crops=setting, load_average=round(os.getloadavg()[0], 2))
            run.update(measure(dataset_config, config.batch_size, _SECONDS.value))
            results["runs"].append(run)
            common.print_row(_ROW, run)
    common.write_json(_JSON.value, results)


if __name__ == "__main__":
    app.run(main)
