r"""Train-step benchmark: compile time, throughput, memory, FLOPs and MFU, compile count.

  python -m benchmarks.train_step --config=configs/cpu_debug.py --steps=50
  python -m benchmarks.train_step --config=configs/default.py --config.model.dtype=bfloat16 \
      --config.batch_size=64 --steps=20 --json=/tmp/base.json

The batch (config.batch_size crops, global) is random audio already on the devices, sharded over
a data mesh of all devices, so only the step is timed. FLOPs: the analytic count of
wavlejepa/flops.py (MFU uses its matmul/conv part), cross-checked against XLA's cost analysis of
the same step with the block loop unrolled (XLA counts a loop body once).
"""

import functools
import time

import jax
import numpy as np
from absl import app, flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_flags

from benchmarks import common
from wavlejepa import compile_count, flops, train_state, train_step
from wavlejepa.data import transforms

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cpu_debug.py", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps (after one warm-up step).")
_CROSS_CHECK = flags.DEFINE_bool("cross_check_flops", True, "Compile an unrolled step for XLA.")
_JSON = flags.DEFINE_string("json", "", "Write the figures to this JSON file too.")

# Dense bf16 peak FLOP/s per chip, by jax device_kind prefix.
PEAK_FLOPS = {
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "TPU v4": 275e12,
}


def peak_flops(device) -> float | None:
    for prefix, peak in PEAK_FLOPS.items():
        if device.device_kind.startswith(prefix):
            return peak
    return None


def measure(config, steps: int, cross_check: bool) -> dict:
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec("data"))
    num_samples = transforms.crop_samples(config.dataset)

    state = jax.jit(functools.partial(train_state.create, config=config), out_shardings=replicated)(
        jax.random.PRNGKey(0)
    )
    audio = jax.device_put(
        jax.random.normal(jax.random.PRNGKey(1), (config.batch_size, num_samples)), data
    )
    batch = {"audio": audio}
    step_fn = jax.jit(
        functools.partial(train_step.train_step, config=config),
        in_shardings=(replicated, {"audio": data}),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )

    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - t0

    with compile_count.CompileCounter() as compiles:
        state, metrics = step_fn(state, batch)  # Warm-up.
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
        seconds = time.perf_counter() - t0

    step_seconds = seconds / steps
    model_flops = flops.train_step_flops(config, num_samples, elementwise=False)
    result = {
        "device": devices[0].device_kind,
        "num_devices": len(devices),
        "dtype": config.model.dtype,
        "batch_size": config.batch_size,
        "crop_seconds": config.dataset.crop_seconds,
        "compile_seconds": compile_seconds,
        "compiles_during_run": compiles.count,
        "steps_timed": steps,
        "step_seconds": step_seconds,
        "steps_per_sec": 1.0 / step_seconds,
        "examples_per_sec": config.batch_size / step_seconds,
        "audio_seconds_per_sec": config.batch_size * config.dataset.crop_seconds / step_seconds,
        "model_flops_per_step": model_flops,
        "analytic_flops_per_step": flops.train_step_flops(config, num_samples),
        "achieved_flops_per_sec": model_flops / step_seconds,
        "final_loss": float(metrics["loss"]),
    }
    stats = devices[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["peak_memory_gib"] = stats["peak_bytes_in_use"] / 2**30
    peak = peak_flops(devices[0])
    if peak is not None:
        result["mfu"] = model_flops / step_seconds / (peak * len(devices))
    xla = compiled.cost_analysis()
    result["xla_flops_scanned"] = float(xla.get("flops", float("nan")))
    if cross_check:
        unrolled = config.copy_and_resolve_references()
        unrolled.model.scan_layers = False
        fn = jax.jit(functools.partial(train_step.train_step, config=unrolled))
        shapes = jax.eval_shape(lambda: (state, batch))
        result["xla_flops_unrolled"] = float(fn.lower(*shapes).compile().cost_analysis()["flops"])
    return result


def main(argv):
    del argv
    result = measure(_CONFIG.value, _STEPS.value, _CROSS_CHECK.value)
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:,.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    common.write_json(_JSON.value, result)


if __name__ == "__main__":
    app.run(main)
