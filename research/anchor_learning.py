r"""The official WavJEPA trained beside ours: the same clips, budgets, probes and health measures.

  python -m research.anchor_learning --config=configs/quickstart.py --steps=750 \
      --probe_every=250 --workdir=/tmp/anchor_750 --peer_python=TORCH_VENV/bin/python \
      --peer_src=PEER_SRC --json=research/results/anchor_small_750steps.json

1. Self-supervised data: `research.learning`'s clips (takes 10-49 of every speaker of
   --fsdd_dir but --heldout_speaker), symlinked into <workdir>/ssl_audio.
2. Training: ../shared/tools/peer-learning/learn_peer.py, the official model code with its EMA
   teacher, masks, loss and AdamW (preset small-conv256: our `small` size), run by
   --peer_python on those clips: --crops_per_step crops of 2.01 s, --steps, seed config.seed,
   warm-up 10% of the steps, the EMA ramp scaled to the run (--ema_end_step=0) or ended at the
   given step (100000: the peer's own). It runs in pieces: a checkpoint at step 1 (its learning
   rate is 0 at step 0, so step 1 holds the initial weights), then one at every probed step, each
   copied out as numpy (<workdir>/snapshots/step_<k>.npz). Running again resumes.
3. Probes: each snapshot's student encoder, imported as WavJEPA's exact network
   (`wavjepa_weights`), goes through `learning.probe_step`: the embedding pass, probes, ranks and
   health measures our runs get. The "invariance" column is the peer's loss (its mean over the
   25 steps before the probed one); it has no SIGReg.

Prints and writes (--json) the same table as `research.learning`.
"""

import json
import math
import os
import statistics
import subprocess

import numpy as np
from absl import app, logging

from research import learning
from wavlejepa import cli, flag_kinds, wavjepa_weights
from wavlejepa.data import fsdd
from wavlejepa.evaluators import linear_probe

PEER_TOOL = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "tools", "peer-learning", "learn_peer.py"
)
_PEER_PYTHON = flag_kinds.define_input(
    "peer_python", os.environ.get("PEER_PYTHON"), "A python with torch for the peer.", kind="file"
)
_PEER_SRC = flag_kinds.define_input(
    "peer_src", os.environ.get("WAVJEPA_SRC"), "labhamlet/wavjepa, extracted.", kind="folder"
)
_PEER_TOOL = flag_kinds.define_input(
    "peer_tool",
    os.environ.get("PEER_TOOL", os.path.normpath(PEER_TOOL)),
    "learn_peer.py (default $PEER_TOOL, else ../shared/tools/peer-learning beside the repository:"
    " set it when running from a worktree elsewhere).",
    kind="file",
)
_CROPS = flag_kinds.define_number(
    "crops_per_step", 8, "2.01 s crops per step.", low=1, high=4096, unit="crops"
)
_EMA_END = flag_kinds.define_number(
    "ema_end_step", 0, "Step where the EMA ramp ends (0: scaled to the run).",
    low=0, high=10**9, unit="step",
)  # fmt: skip
_THREADS = flag_kinds.define_number("peer_threads", 2, "torch threads.", low=1, high=1024)
PRESET = "small-conv256"
PEER_LOSS_WINDOW = 25  # The peer logs its loss averaged over the last 25 steps.


def peer_command(workdir: str, seed: int, steps: int, ckpt_every: int, stop_after: int) -> list:
    command = [
        _PEER_PYTHON.value, _PEER_TOOL.value, "--src", _PEER_SRC.value,
        "--train_dir", os.path.join(workdir, "ssl_audio"), "--preset", PRESET,
        "--steps", str(steps), "--batch", str(_CROPS.value), "--seed", str(seed),
        # The peer's own probes are not the comparison (ours below are): a small sample, once.
        "--probe_every", "0", "--probe_subset", "100", "--threads", str(_THREADS.value),
        "--ckpt_dir", os.path.join(workdir, "ckpt"), "--ckpt_every", str(ckpt_every),
        "--stop_after", str(stop_after), "--out", os.path.join(workdir, "peer.json"),
    ]  # fmt: skip
    return command + (["--ema_end_step", str(_EMA_END.value)] if _EMA_END.value else [])


_TO_NUMPY = (  # Runs in the peer's python: its checkpoint's model state as float32 numpy.
    "import sys, numpy as np, torch; "
    "ck = torch.load(sys.argv[1], map_location='cpu', weights_only=False); "  # Our tool's file.
    "np.savez(sys.argv[2], __step__=ck['step'], "
    "**{k: v.float().numpy() for k, v in ck['model'].items()})"
)


def snapshot(workdir: str, seed: int, steps: int, step: int, every: int) -> str:
    """<workdir>/snapshots/step_<step>.npz, training the peer up to `step` if need be (step 0 is
    the checkpoint of step 1, whose update had learning rate 0)."""
    path = os.path.join(workdir, "snapshots", f"step_{step:06d}.npz")
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    at = max(step, 1)
    # The peer saves last.pt (67 MB at the small size) every gcd(every, learning.SAVE_EVERY)
    # steps: a run stopped between probes (a session's end) resumes at most that many steps
    # back, and each probe step is a save.
    save_every = 1 if step == 0 else math.gcd(every, learning.SAVE_EVERY)
    command = peer_command(workdir, seed, steps, save_every, at)
    logging.info("Training the peer to step %d: %s", at, " ".join(command))
    with open(os.path.join(workdir, "peer.log"), "a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    checkpoint = os.path.join(workdir, "ckpt", "last.pt")
    subprocess.run([_PEER_PYTHON.value, "-c", _TO_NUMPY, checkpoint, path + ".tmp.npz"],
                   check=True)  # fmt: skip
    with np.load(path + ".tmp.npz") as z:
        if int(z["__step__"]) != at:
            raise RuntimeError(f"{checkpoint} is of step {int(z['__step__'])}, not {at}.")
    os.replace(path + ".tmp.npz", path)
    return path


def encoder(path: str, config):
    """The student encoder of a snapshot: (params, `config` with its model) for
    `learning.probe_step`."""
    with np.load(path) as z:
        state = {k: z[k] for k in z.files if k != "__step__"}
    params, sizes, _ = wavjepa_weights.to_params(state)
    config = config.copy_and_resolve_references()
    config.model = wavjepa_weights.model_config(sizes)
    return params, config


def peer_loss(workdir: str, step: int) -> dict:
    """The peer's mean loss over the PEER_LOSS_WINDOW steps up to `step` (none at step 0)."""
    path = os.path.join(workdir, "peer.json")
    losses = json.load(open(path)).get("losses", []) if os.path.exists(path) else []
    window = losses[max(0, step - PEER_LOSS_WINDOW) : step]
    return {
        "metrics_step": step if window else None,
        "sigreg": None,
        "invariance": statistics.mean(window) if window else None,
    }


def main(argv):
    args = learning.run_args(argv)
    if not (_PEER_PYTHON.value and _PEER_SRC.value):
        cli.fail("--peer_python and --peer_src (or $PEER_PYTHON, $WAVJEPA_SRC) name a python "
                 "with torch and the peer's extracted source: give both.")  # fmt: skip
    workdir = os.path.abspath(learning._WORKDIR.value)
    fsdd_dir, heldout, steps = args["fsdd_dir"], args["heldout"], args["steps"]
    seed, every = learning._CONFIG.value.seed, args["probe_every"]
    try:
        ssl_files = learning.ssl_files(fsdd_dir, heldout)
    except ValueError as e:  # No recordings, or the held-out speaker is not among them.
        cli.fail(str(e))
    learning.link_files(fsdd_dir, ssl_files, os.path.join(workdir, "ssl_audio"))
    paths = {
        k: snapshot(workdir, seed, steps, k, every) for k in learning.probe_steps(steps, every)
    }

    data = learning.subsample(fsdd.load_fsdd(fsdd_dir), args["max_clips"])
    probe_cfg = linear_probe.default_config()
    probe_cfg.steps = args["probe_steps_lbfgs"]
    rows = []
    for step, path in paths.items():
        params, config = encoder(path, learning._CONFIG.value)
        row, _ = learning.probe_step(
            step, params, config, data, heldout, probe_cfg, args["batch_size"],
            learning._SHARE_FRAMES.value, peer_loss(workdir, step),
        )  # fmt: skip
        rows.append(row)
    with open(os.path.join(workdir, "peer.json")) as f:
        peer = json.load(f)
    settings = dict(
        system=f"official WavJEPA ({os.path.basename(_PEER_TOOL.value)}, {PRESET})",
        peer_commit=peer.get("peer_commit"), seed=seed, steps=steps, probe_every=every,
        crops_per_step=_CROPS.value, crop_seconds=2.01, ema_end_step=_EMA_END.value or "scaled",
        fsdd_dir=fsdd_dir, heldout_speaker=heldout, share_frames=learning._SHARE_FRAMES.value,
        probe_lbfgs_steps=probe_cfg.steps,
        clips={split: len(data[split]["audio"]) for split in learning.SPLITS},
    )  # fmt: skip
    peer_run = {k: peer[k] for k in ("losses", "log", "total_wall_s") if k in peer}
    learning.report({"settings": settings, "steps": rows, "peer": peer_run}, rows)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
