r"""Tiny model on dummy or small data: trains in seconds on a laptop CPU.

  python -m wavlejepa.main --config=configs/cpu_debug.py --workdir=/tmp/wj_debug \
      --config.debug_dummy_data=True

Expect a finite loss printed every 5 steps and ~20 steps in well under a minute on 2 cores.
"""

from configs import default
from wavlejepa import model_sizes


def get_config():
    config = default.get_config()
    config.model = model_sizes.model_config("tiny")
    config.total_steps = 20
    config.batch_size = 8
    config.log_every_steps = 5
    config.eval_every_steps = 10
    config.checkpoint_every_steps = 10
    config.loss.num_slices = 64
    config.optimizer.peak_lr = 1e-3
    config.optimizer.warmup_steps = 5
    config.dataset.crop_seconds = 0.51  # 8,160 samples = 50 frames.
    config.dataset.crops_per_clip = 2
    config.dataset.num_workers = 0
    config.dataset.eval_batches = 1
    config.masking.num_context_drop_spans = 3
    config.masking.spans_per_target_group = 1
    return config
