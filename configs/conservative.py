r"""The default recipe with a gentler learning rate: the safe choice when SIGReg spikes.

Use it when a run logs "SIGReg ... is above config.health.sigreg_collapse_fraction" or "Loss jumped"
warnings, or stops on a non-finite loss: a lower peak and a short warm-up keep the embeddings
from blowing up early, at the cost of somewhat slower progress.

  python -m wavlejepa.main --config=configs/conservative.py --workdir=/tmp/wavlejepa_conservative \
      --config.dataset.name=my_audio --config.dataset.audio_dir=/path/to/audio

Everything else (model size, batch, hardware) is configs/default.py; to combine with a hardware
config, pass its overrides on the command line instead (e.g. with configs/tpu_v4.py:
`--config.optimizer.peak_lr=1.5e-4 --config.optimizer.warmup_steps=7500`). Expect the same
step time as the config it replaces and a loss curve without SIGReg spikes; not yet measured.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.optimizer.peak_lr = 1.5e-4  # Below WavJEPA's 4e-4: SIGReg stays bounded early on.
    config.optimizer.warmup_steps = 7_500  # Reach the (lower) peak quickly instead of at 100k.
    return config
