r"""SIGReg's cost against num_slices and N, alone and as a share of the whole train step.

  python -m benchmarks.sigreg --config=configs/cpu_debug.py
  python -m benchmarks.sigreg --config=configs/default.py --config.model.dtype=bfloat16 \
      --config.batch_size=256 --json=/tmp/sigreg.json

For each num_slices in --slices and each N in --batch_sizes: the time of SIGReg's forward and
backward on [N, projector_dim] embeddings, and of the whole train step at that batch size.
"""

import functools

import jax
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from wavlejepa import sigreg, train_state, train_step
from wavlejepa.data import transforms

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cpu_debug.py", lock_config=True)
_SLICES = flags.DEFINE_list("slices", ["256", "1024", "4096"], "num_slices values.")
_BATCHES = flags.DEFINE_list("batch_sizes", [], "Global batch sizes (default: the config's).")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed repeats of each measurement.")
_JSON = flags.DEFINE_string("json", "", "Write the figures to this JSON file too.")


def measure(config, slices: list[int], batch_sizes: list[int], repeats: int) -> list[dict]:
    num_samples = transforms.crop_samples(config.dataset)
    dim = config.model.projector_dim
    rows = []
    for batch in batch_sizes:
        for num_slices in slices:
            cfg = config.copy_and_resolve_references()
            cfg.batch_size, cfg.loss.num_slices = batch, num_slices
            emb = jax.random.normal(jax.random.PRNGKey(0), (batch, dim))
            dirs = sigreg.random_directions(jax.random.PRNGKey(1), dim, num_slices)
            reg = jax.jit(jax.value_and_grad(lambda e, d: sigreg.sigreg(e, d)))
            sigreg_seconds = common.time_call(reg, emb, dirs, repeats=repeats)

            state = train_state.create(jax.random.PRNGKey(0), cfg)
            audio = jax.random.normal(jax.random.PRNGKey(2), (batch, num_samples))
            step = jax.jit(functools.partial(train_step.train_step, config=cfg))
            step_seconds = common.time_call(step, state, {"audio": audio}, repeats=repeats)
            rows.append(
                {
                    "device": jax.devices()[0].device_kind,
                    "batch_size": batch,
                    "num_slices": num_slices,
                    "sigreg_ms": 1e3 * sigreg_seconds,
                    "step_ms": 1e3 * step_seconds,
                    "sigreg_share": sigreg_seconds / step_seconds,
                }
            )
            share = 100 * sigreg_seconds / step_seconds
            print(
                f"N={batch:5d} slices={num_slices:5d} sigreg {1e3 * sigreg_seconds:8.2f} ms  "
                f"step {1e3 * step_seconds:9.2f} ms  share {share:5.1f}%",
                flush=True,
            )
    return rows


def main(argv):
    del argv
    config = _CONFIG.value
    batch_sizes = [int(b) for b in _BATCHES.value] or [config.batch_size]
    rows = measure(config, [int(s) for s in _SLICES.value], batch_sizes, _REPEATS.value)
    common.write_json(_JSON.value, rows)


if __name__ == "__main__":
    app.run(main)
