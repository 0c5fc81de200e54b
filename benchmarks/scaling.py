r"""Step time against crop length and global batch, with attention's share of the FLOPs.

  python -m benchmarks.scaling --config=configs/cpu_debug.py --crop_seconds=1,2,4,8,16
  python -m benchmarks.scaling --config=configs/default.py --config.model.dtype=bfloat16 \
      --config.batch_size=64 --batch_sizes=16,64,256 --json=/tmp/scaling.json

Masking spans stay at their config values, so longer crops have more context frames; the
context capacity scales with the crop (max_context_fraction). `attention_share` is the
quadratic part of attention (scores, weighted values) over all matmul/conv FLOPs: where it
passes ~50%, attention is the bottleneck.
"""

import functools
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from wavlejepa import flops, train_state, train_step
from wavlejepa.data import transforms

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cpu_debug.py", lock_config=True)
_CROPS = flags.DEFINE_list("crop_seconds", ["1", "2", "4", "8", "16"], "Crop lengths (s).")
_BATCHES = flags.DEFINE_list("batch_sizes", [], "Global batch sizes (default: the config's).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per point.")
_JSON = flags.DEFINE_string("json", "", "Write the figures to this JSON file too.")
_ROW = (  # One line per point: `measure_point`'s dict.
    "batch {batch_size:4d} crop {crop_seconds:5.2f} s  step {step_ms:9.1f} ms  "
    "{audio_seconds_per_sec:8.1f} audio-s/s  attention {attention_share:6.1%} of FLOPs"
)


def measure_point(config, steps: int) -> dict:
    num_samples = transforms.crop_samples(config.dataset)
    state = train_state.create(jax.random.PRNGKey(0), config)
    batch = {"audio": jax.random.normal(jax.random.PRNGKey(1), (config.batch_size, num_samples))}
    step = jax.jit(functools.partial(train_step.train_step, config=config), donate_argnums=0)
    t0 = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_and_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    step_seconds = (time.perf_counter() - t0) / steps
    model_flops = flops.train_step_flops(config, num_samples, elementwise=False)
    attention = 3 * flops.attention_score_flops(config, num_samples)
    return {
        "device": jax.devices()[0].device_kind,
        "crop_seconds": config.dataset.crop_seconds,
        "batch_size": config.batch_size,
        "first_step_seconds": compile_and_first,
        "step_ms": 1e3 * step_seconds,
        "audio_seconds_per_sec": config.batch_size * config.dataset.crop_seconds / step_seconds,
        "model_gflops_per_step": model_flops / 1e9,
        "attention_share": attention / model_flops,
        "achieved_gflops_per_sec": model_flops / step_seconds / 1e9,
    }


def main(argv):
    del argv
    base = _CONFIG.value
    rows = []
    for batch in [int(b) for b in _BATCHES.value] or [base.batch_size]:
        for crop in [float(c) for c in _CROPS.value]:
            config = base.copy_and_resolve_references()
            config.batch_size = batch
            config.dataset.crop_seconds = crop
            row = measure_point(config, _STEPS.value)
            rows.append(row)
            common.print_row(_ROW, row)
    common.write_json(_JSON.value, rows)


if __name__ == "__main__":
    app.run(main)
