r"""Which encoder block's output probes best? `research.learning`'s probes at every depth.

  python -m research.probe_layers --workdir=/tmp/lb_small --checkpoints=0,400 \
      --json=/tmp/layers.json

Reads a run of `research.learning` (its checkpoints and their config; step 0 = the run's
initial params, as there), and for each step and each L in 0..encoder_depth embeds all FSDD clips
with the context encoder cut after block L (its final LayerNorm kept, as the embedder applies it
after the last block) and runs the same probes, with mean and mean_std pooling: digits,
speakers and the held-out speaker's digits. L = 0 is the conv front end's output (with its
positions) before any block; L = encoder_depth is the embedder's own output, `research.learning`'s
rows.
"""

import os

import jax
import ml_collections
from absl import app, flags, logging

from benchmarks import common
from research import learning
from wavlejepa import checkpointing, pretrained
from wavlejepa.data import fsdd
from wavlejepa.evaluators import linear_probe

FLAGS = flags.FLAGS

# --workdir, --fsdd_dir, --heldout_speaker, --batch_size and --json are research.learning's
# flags (defined when it is imported), read here with the meaning they have there.
_CHECKPOINTS = flags.DEFINE_list("checkpoints", ["0"], "Steps to probe (0: initial params).")
_BLOCKS = flags.DEFINE_list("blocks", [], "Depths to probe (default: 0..encoder_depth).")


def truncated(
    params: dict, config: ml_collections.ConfigDict, blocks: int
) -> tuple[dict, ml_collections.ConfigDict]:
    """(params, config) of the same model with its context encoder cut after `blocks` blocks
    (0: none, the front end's frames through the final LayerNorm)."""
    depth = config.model.encoder_depth
    if not 0 <= blocks <= depth:
        raise ValueError(f"blocks={blocks}: cut after 0..{depth} blocks.")
    encoder = dict(params["context_encoder"])
    encoder["blocks"] = jax.tree.map(lambda stacked: stacked[:blocks], encoder["blocks"])
    config = config.copy_and_resolve_references()
    config.model.encoder_depth = blocks
    return {**params, "context_encoder": encoder}, config


def run(
    workdir: str,
    steps: list[int],
    *,
    fsdd_dir: str,
    heldout: str,
    batch_size: int,
    depths: list[int] | None = None,
) -> dict:
    """{step: {blocks: `learning.accuracies`}} (see the module docstring), for each of `depths`
    (default: every depth, 0..encoder_depth)."""
    checkpoints = os.path.join(workdir, checkpointing.LATEST_DIR)
    config = pretrained.load_config(checkpoints)
    data = fsdd.load_fsdd(fsdd_dir)
    probe_cfg = linear_probe.default_config()
    results = {}
    for step in steps:
        params = learning.step_params(config, workdir, step)
        results[step] = {}
        for blocks in range(config.model.encoder_depth + 1) if depths is None else depths:
            cut_params, cut_config = truncated(params, config, blocks)
            frames_fn = linear_probe.model_frames(cut_params, cut_config, batch_size)
            frames = {s: frames_fn(data[s]["audio"]) for s in learning.SPLITS}
            probed = learning.probes(frames, data, heldout, probe_cfg)
            results[step][blocks] = learning.accuracies(probed)
            logging.info("Step %d, blocks 1-%d: %s", step, blocks, results[step][blocks])
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    results = run(
        os.path.abspath(FLAGS.workdir),
        [int(s) for s in _CHECKPOINTS.value],
        fsdd_dir=os.path.abspath(FLAGS.fsdd_dir),
        heldout=FLAGS.heldout_speaker,
        batch_size=FLAGS.batch_size,
        depths=[int(b) for b in _BLOCKS.value] or None,
    )
    rows = [(step, blocks, accuracy) for step, by_blocks in results.items()
            for blocks, accuracy in by_blocks.items()]  # fmt: skip
    headers = {key: header for header, key, _ in learning.COLUMNS}  # "ms": mean_std pooling.
    keys = list(rows[0][2])
    print("step  blocks" + "".join(headers[k].rjust(9) for k in keys))
    for step, blocks, accuracy in rows:
        print(f"{step:<6}{blocks:>6}" + "".join(f"{accuracy[k]:9.3f}" for k in keys))
    common.write_json(FLAGS.json, {"workdir": FLAGS.workdir, "results": results}, indent=1)


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
