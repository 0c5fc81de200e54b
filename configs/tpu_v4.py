r"""The base model on a TPU v4-32 pod slice (16 chips, 4 hosts), in bfloat16.

Prepare the dataset once in a bucket (it must be readable from every host), then start the same
command on all hosts (`--multihost` makes each call jax.distributed.initialize()):

  python -m wavlejepa.prepare_dataset --audio_dir=/path/to/audio \
      --data_dir=gs://YOUR_BUCKET/tensorflow_datasets --name=my_audio
  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=all --command="cd wavlejepa && \
      python -m wavlejepa.main --config=configs/tpu_v4.py --multihost \
      --workdir=gs://YOUR_BUCKET/wavlejepa/base_run \
      --config.dataset.data_dir=gs://YOUR_BUCKET/tensorflow_datasets --config.dataset.name=my_audio"

`gs://YOUR_BUCKET/...` is a placeholder: put your own bucket in both places (the workdir holds
checkpoints and TensorBoard events, and must be shared by the hosts too). What to expect (an
estimate, not yet measured): one step is ~117 TFLOPs (wavlejepa/flops.py), so 0.07-0.09 s/step
at 30-40% MFU of 16 x 275 bf16 TFLOP/s, i.e. 7-9 hours for the 375k steps, if the input
pipeline keeps up (16 clips a step per host: ~200 clips/s per host). A SIGReg-spike warning
names the overrides to try (half the peak LR, 2e-4 here).
"""

import ml_collections

from configs import default


def get_config():
    config = default.get_config()
    # default.py's loss: SIGReg tests 32 of the 512 crops x 50 of their 200 frames a step, the
    # 1,600 rows at which its weights were measured to learn (the scale rule of losses.py).
    config.batch_size = 512  # WavJEPA's global batch: 32 crops on each of the 16 chips.
    config.model.dtype = "bfloat16"  # The MXU's native type; params, norms, SIGReg stay float32.
    config.dataset.data_dir = "gs://YOUR_BUCKET/tensorflow_datasets"  # Placeholder: your bucket.
    config.dataset.num_workers = 16  # grain processes per host (a v4 host has 240 vCPUs).
    config.checkpoint_every_steps = 2_500  # ~4 min of work lost at most on preemption.
    config.evals.fsdd_digits = ml_collections.ConfigDict()  # Digit probe on FSDD, each host alike.
    return config
