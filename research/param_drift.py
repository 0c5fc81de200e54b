r"""How far has training moved each part of the model from its initial params?

  python -m research.param_drift --workdir=/tmp/lb_small --checkpoints=250,750 \
      --json=/tmp/drift.json

Reads a run of `research.learning` (its checkpoints; step 0 = the run's initial params, as
there) and prints, for each weight kernel (a leaf named "kernel": convs and dense layers; stacked
transformer blocks counted together), its RMS at init and its relative change at each step,
||w_step - w_0|| / ||w_0||. Adam moves every weight by about the learning rate a step whatever its
scale, so a kernel initialised large (the front end's Kaiming-normal convs) moves relatively less
than a small one (the transformer's) at the same learning rate.
"""

import os

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from research import learning, probe_layers  # noqa: F401 (probe_layers: its flag)
from wavlejepa import checkpointing, pretrained

FLAGS = flags.FLAGS

# --workdir and --json are research.learning's flags, and --checkpoints (the steps to compare
# with the init) is research.probe_layers', all defined when they are imported: one process
# (a test session) may import all three.


def kernels(params: dict) -> dict[str, np.ndarray]:
    """{"waveform_encoder/conv_0", ...: kernel}: every leaf named "kernel", by its path."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [getattr(entry, "key", str(entry)) for entry in path]
        if names[-1] == "kernel":
            out["/".join(names[:-1])] = np.asarray(leaf, np.float64)
    return out


def drift(initial: dict, trained: dict) -> dict[str, dict[str, float]]:
    """{kernel path: {"init_rms": RMS of w_0, "relative_change": ||w - w_0|| / ||w_0||}}."""
    start, end = kernels(initial), kernels(trained)
    return {
        name: {
            "init_rms": float(np.sqrt(np.mean(np.square(w0)))),
            "relative_change": float(np.linalg.norm(end[name] - w0) / np.linalg.norm(w0)),
        }
        for name, w0 in start.items()
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    checkpoints = os.path.join(os.path.abspath(FLAGS.workdir), checkpointing.LATEST_DIR)
    config = pretrained.load_config(checkpoints)
    initial = learning.initial_params(config)
    steps = [int(s) for s in FLAGS.checkpoints]
    results = {step: drift(initial, pretrained.load(checkpoints, step)[0]) for step in steps}
    print(f"{'kernel':<48}{'init rms':>10}" + "".join(f"{f'step {s}':>12}" for s in steps))
    for name, first in results[steps[0]].items():
        changes = "".join(f"{results[s][name]['relative_change']:12.3f}" for s in steps)
        print(f"{name:<48}{first['init_rms']:10.4f}{changes}")
    common.write_json(FLAGS.json, {"workdir": FLAGS.workdir, "results": results}, indent=1)


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
