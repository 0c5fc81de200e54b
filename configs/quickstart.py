r"""Quickstart: the small model on the 300 FSDD spoken digits bundled with the package, on CPU.

  python -m wavlejepa.main --config=configs/quickstart.py --workdir=/tmp/wavlejepa_quickstart

The first run builds the sample into a TFDS dataset (a few seconds: 300 clips resampled to
16 kHz) under ~/.cache/wavlejepa/tensorflow_datasets ($XDG_CACHE_HOME if set); later runs reuse
it. The audio is real speech (CC BY-SA 4.0, see wavlejepa/data/samples/fsdd/README.md), so the
loss curve and the embeddings mean something, unlike `debug_dummy_data`.
"""

import os

import ml_collections

import wavlejepa.data
from configs import default
from wavlejepa import model_sizes


def get_config():
    config = default.get_config()
    config.model = model_sizes.model_config("small")
    config.total_steps = 100  # About 5 minutes on 2 cores; research/learning.py runs it longer.
    config.batch_size = 32  # 16 clips x 2 crops: 32 x 50 frames = 1,600 SIGReg rows.
    config.log_every_steps = 10  # A progress line within the first minute on 2 cores.
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 100
    config.loss.num_slices = 256  # 1,024 measured no better here, at four times the cost.
    config.optimizer.peak_lr = 2e-4  # At batch 32, 1e-3 unlearns after step 100; 2e-4 keeps rising.
    config.optimizer.warmup_steps = 30  # A short warm-up for runs of 100 to a few thousand steps.

    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    config.dataset.name = "audio_folder"
    config.dataset.audio_dir = wavlejepa.data.FSDD_SAMPLE_DIR  # Installed with the package.
    config.dataset.data_dir = os.path.join(cache, "wavlejepa", "tensorflow_datasets")
    config.dataset.validation_fraction = 0.1  # 34 of the 300 clips: two eval batches of 16.
    config.dataset.test_fraction = 0.1
    config.dataset.crop_seconds = 0.51  # 8,160 samples = 50 frames; FSDD clips are 0.14-0.87 s.
    config.dataset.crops_per_clip = 2
    config.dataset.short_clips = "pack"  # Most clips are shorter than a crop: join them.
    config.dataset.num_workers = 0  # On a 2-core machine workers only compete with the step.
    config.dataset.eval_batches = 2
    # 50 frames hold far fewer spans than WavJEPA's 200 (as in cpu_debug.py).
    config.masking.num_context_drop_spans = 3
    config.masking.spans_per_target_group = 1
    config.evals.fsdd_digits = ml_collections.ConfigDict(dict(data="sample"))  # Probe, ~15 s/eval.
    return config
