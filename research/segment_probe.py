r"""A probe that reads the frames in order: `research.learning`'s probes on segment-pooled clips.

  python -m research.segment_probe --workdir=/tmp/lb_small --at_steps=0,750 \
      --segments=1,4 --json=/tmp/segments.json

Mean pooling averages a clip's frames into one vector, so a linear probe on it cannot read what
comes first: "six" and "seven" begin alike and differ later. This pools each clip into K
vectors instead, the means of K consecutive, nearly equal stretches of its frames, and
concatenates them ([K * dim]); K = 1 is mean pooling, and reproduces `research.learning`'s
"mean" numbers of the same step. The probes are `research.learning`'s: digits and speakers (the
standard take splits) and the held-out speaker's digits, weight decay picked on validation.

--workdir is a run of `research.learning` (its checkpoints and their config; step 0 = the run's
initial params, as there) or of `research.anchor_learning` (its snapshots/step_<k>.npz, imported
as WavJEPA's network and embedded with --config, the config that run was given). Log-mel frames
go through the same probes as a reference.
"""

import os

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import common
from research import anchor_learning, learning
from wavlejepa import checkpointing, cli, flag_kinds, logmel, pretrained
from wavlejepa.data import fsdd
from wavlejepa.evaluators import linear_probe

FLAGS = flags.FLAGS

# --workdir, --config, --fsdd_dir, --heldout_speaker, --batch_size, --probe_steps and --json are
# research.learning's flags (defined when it is imported), read here with the meaning they have
# there.
_AT_STEPS = flag_kinds.define_text(  # Not --checkpoints: research.probe_layers defines that.
    "at_steps", "0", "Steps to probe (0: initial params).",
    pattern=r"\d+(,\d+)*", what="steps separated by commas", example="0,750",
)  # fmt: skip
_SEGMENTS = flag_kinds.define_text(
    "segments", "1,4", "Segment counts K to pool into.",
    pattern=r"0*[1-9]\d*(,0*[1-9]\d*)*", what="counts of at least 1, separated by commas",
    example="1,4",
)  # fmt: skip
_LOGMEL = flags.DEFINE_bool("logmel", True, "Probe log-mel frames the same way too.")


def segment_pool(frames_TxD: np.ndarray, segments: int) -> np.ndarray:
    """Frames [frames, dim] -> [segments * dim]: the means of `segments` consecutive stretches
    of frames, in order. Stretch i holds frames floor(i T / K) up to floor((i + 1) T / K)
    (exclusive): they tile the clip when T >= K; a clip shorter than K frames gives stretch i
    the single frame floor(i T / K)."""
    frames = np.asarray(frames_TxD, np.float64)
    num_frames = len(frames)
    if num_frames == 0 or segments < 1:
        raise ValueError(f"segment_pool needs frames and segments >= 1: got {frames.shape}, "
                         f"{segments}.")  # fmt: skip
    means = []
    for i in range(segments):
        start = i * num_frames // segments
        stop = max((i + 1) * num_frames // segments, start + 1)
        means.append(frames[start:stop].mean(axis=0))
    return np.concatenate(means)


def probes(frames: dict, data: dict, heldout: str, probe_cfg, segments: int) -> dict:
    """{task: fit_and_score result} of each of `learning.TASKS` on `segment_pool`ed frames
    {split: [[frames, dim]] per clip}."""
    features = {
        s: np.stack([segment_pool(f, segments) for f in frames[s]]) for s in learning.SPLITS
    }
    return learning.task_probes(features, data, heldout, probe_cfg)


def models(workdir: str, steps: list[int], base_config):
    """(step, params, config) of each step of a `research.learning` run (checkpoints) or a
    `research.anchor_learning` run (snapshots, embedded with `base_config`)."""
    snapshots = os.path.join(workdir, "snapshots")
    if os.path.isdir(snapshots):
        for step in steps:
            path = os.path.join(snapshots, f"step_{step:06d}.npz")
            if not os.path.exists(path):
                have = sorted(os.listdir(snapshots))
                raise ValueError(f"{path} is missing: --at_steps names steps of {have}.")
            yield (step, *anchor_learning.encoder(path, base_config))
        return
    config = pretrained.load_config(os.path.join(workdir, checkpointing.LATEST_DIR))
    for step in steps:
        yield step, learning.step_params(config, workdir, step), config


def scores(results: dict) -> dict:
    """{task: test accuracy} of `probes` results."""
    return {task: r["test_accuracy"] for task, r in results.items()}


def run(
    workdir: str, steps: list[int], segment_counts: list[int], *, fsdd_dir: str, heldout: str,
    batch_size: int, probe_steps_lbfgs: int, base_config, with_logmel: bool = True,
) -> dict:  # fmt: skip
    """{"steps": {step: {K: results}}, "logmel": {K: results}} (see the module docstring)."""
    data = fsdd.load_fsdd(fsdd_dir)
    probe_cfg = linear_probe.default_config()
    probe_cfg.steps = probe_steps_lbfgs
    out = {"steps": {}}
    for step, params, config in models(workdir, steps, base_config):
        frames_fn = linear_probe.model_frames(params, config, batch_size)
        frames = {s: frames_fn(data[s]["audio"]) for s in learning.SPLITS}
        out["steps"][step] = {
            k: probes(frames, data, heldout, probe_cfg, k) for k in segment_counts
        }
        logging.info("Step %d: %s", step, {k: scores(r) for k, r in out["steps"][step].items()})
    if with_logmel:
        frames = {s: logmel.logmel_frames(data[s]["audio"]) for s in learning.SPLITS}
        out["logmel"] = {k: probes(frames, data, heldout, probe_cfg, k) for k in segment_counts}
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    steps = [int(s) for s in _AT_STEPS.value.split(",")]
    segment_counts = [int(k) for k in _SEGMENTS.value.split(",")]
    workdir = os.path.abspath(FLAGS.workdir)
    try:
        result = run(
            workdir, steps, segment_counts, fsdd_dir=os.path.abspath(FLAGS.fsdd_dir),
            heldout=FLAGS.heldout_speaker, batch_size=FLAGS.batch_size,
            probe_steps_lbfgs=FLAGS.probe_steps, base_config=FLAGS.config,
            with_logmel=_LOGMEL.value,
        )  # fmt: skip
    except ValueError as e:  # A missing snapshot, or a speaker not in --fsdd_dir.
        cli.fail(" ".join(str(e).split()))
    rows = [(str(step), k, scores(r)) for step, by_k in result["steps"].items()
            for k, r in by_k.items()]  # fmt: skip
    rows += [("log-mel", k, scores(r)) for k, r in result.get("logmel", {}).items()]
    print("step       K" + "".join(task.rjust(16) for task in learning.TASKS))
    for label, k, accuracy in rows:
        print(f"{label:<8}{k:>4}" + "".join(f"{accuracy[t]:16.3f}" for t in learning.TASKS))
    result["settings"] = dict(
        workdir=workdir, checkpoints=steps, segments=segment_counts,
        heldout_speaker=FLAGS.heldout_speaker, probe_lbfgs_steps=FLAGS.probe_steps,
        config=config_flags.get_config_filename(FLAGS["config"]),
    )  # fmt: skip
    common.write_json(FLAGS.json, result, indent=1)


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main, flags_parser=cli.parse_flags)
