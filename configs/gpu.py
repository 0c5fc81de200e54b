r"""The base model on one node of 8 GPUs (A100/H100), in bfloat16.

  python -m wavlejepa.main --config=configs/gpu.py --workdir=/data/runs/wavlejepa_base \
      --config.dataset.name=my_audio --config.dataset.audio_dir=/path/to/audio

(install with `pip install -e ".[gpu]" -c constraints.txt`). What to expect (an estimate, not
yet measured): one step is ~117 TFLOPs (wavlejepa/flops.py), so on H100s about 0.04-0.05 s/step
at 30-40% MFU (4-5 hours for the 375k steps), on A100s about 0.12-0.16 s/step (12-16 hours),
if the input pipeline keeps up (64 clips a step: ~1,400 clips/s on H100s, ~450 on A100s). A
SIGReg-spike warning names the overrides to try (half the peak LR, 2e-4 here).
"""

from configs import default


def get_config():
    config = default.get_config()
    # default.py's loss: SIGReg tests 32 of the 512 crops x 50 of their 200 frames a step, the
    # 1,600 rows at which its weights were measured to learn (the scale rule of losses.py).
    config.batch_size = 512  # WavJEPA's global batch: 64 crops per GPU.
    config.model.dtype = "bfloat16"  # Tensor-core type; params, norms and SIGReg stay float32.
    config.dataset.num_workers = 16  # grain processes decoding and cropping for 8 GPUs.
    return config
