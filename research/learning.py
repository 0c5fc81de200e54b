r"""Does training improve the representation? Probes a run's checkpoints on FSDD as it trains.

  python -m research.learning --config=configs/cpu_debug.py --steps=10 --probe_every=5 \
      --workdir=/tmp/lb_test
  python -m research.learning --config=configs/quickstart.py --steps=400 --probe_every=100 \
      --workdir=/tmp/lb_small --json=/tmp/lb_small.json --plot=/tmp/lb_small.png

1. Self-supervised data: the FSDD files (--fsdd_dir) of the probe's train takes (10-49) of every
   speaker but --heldout_speaker (default george, the first in sorted order), symlinked into
   <workdir>/ssl_audio and built on first use into <workdir>/tfds as `fsdd_ssl_<speaker>`.
   --ssl_heldout_speaker (a diagnostic) adds that speaker's takes 10-49, unlabelled.
2. Training: `train.train_and_evaluate` with total_steps=--steps, the checkpoint of every
   --probe_every steps kept (saves every gcd(--probe_every, 250) steps), no evaluators; the
   config's crops and model are kept. Running the command again resumes the run, or skips
   training when its last checkpoint exists.
3. Probes, per step (0 = the run's initial params, then every probed step), on one embedding pass
   over all FSDD clips, each with mean and with mean_std pooling: digits and speakers (the
   standard take splits), and held-out-speaker digits (trained on the other speakers' takes
   10-49, weight decay picked on their takes 5-9, tested on all clips of the held-out speaker,
   whom neither the self-supervised run nor the probe saw). Baseline: log-mel frames through the
   same probes; random init is the step-0 row.
4. Collapse checks per step: `diagnostics.variance_shares` of the first --share_frames (30) frame
   embeddings of the FSDD test-take clips at least that long; `diagnostics.effective_rank` of
   every frame embedding of the test-take clips ("enc rank") and of their projection z ("z
   rank"); the spread, participation ratio and within-clip std of the pooled clip embeddings
   and SIGReg of the encoder's frames (`health`: the same measures for any encoder, the
   official WavJEPA's included); and the training `sigreg` and `invariance` from
   <workdir>/metrics.jsonl at the logged step nearest each probed step.

Prints one row per probed step and a log-mel row (test accuracies, "ms" columns with mean_std
pooling; log-mel's rank is of its 80-bin frames; step 0's sigreg/invariance are those of the first
logged step). The first command (full FSDD, 3 minutes on our shared 2-core machine, mostly
compilation) printed, in two halves here,

  step         digits   dig ms speakers   spk ms  heldout  held ms
  0 (init)      0.460    0.552    0.748    0.820    0.310    0.348
  5             0.412    0.528    0.772    0.820    0.314    0.350
  10            0.444    0.496    0.792    0.824    0.332    0.322
  log-mel       0.940    0.936    0.996    1.000    0.300    0.568

  step       pos share clip share enc rank  z rank    sigreg invariance
  0 (init)       0.952      0.002     12.4    12.0     160.6     0.0113
  5              0.941      0.003     12.7    13.8     160.6     0.0113
  10             0.920      0.004     13.2    13.3     160.4   0.003744
  log-mel        0.072      0.560      4.5       -         -          -

and writes every number (all splits, chosen weight decays, the --config.* overrides) to --json
and a learning curve to --plot.
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from ml_collections import config_flags

from benchmarks import common
from wavlejepa import (
    checkpointing,
    cli,
    diagnostics,
    flag_kinds,
    logmel,
    plot,
    pretrained,
    reporting,
    sigreg,
    train,
    train_state,
)
from wavlejepa.data import audio_folder, fsdd
from wavlejepa.evaluators import linear_probe
from wavlejepa.nets import projector

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cpu_debug.py", lock_config=True)
_WORKDIR = flag_kinds.define_output(
    "workdir", None, "Run directory (resumed if it exists).", kind="folder"
)
_STEPS = flag_kinds.define_number(
    "steps", 100, "Training steps (config.total_steps).", low=1, high=10**7, unit="steps"
)
_PROBE_EVERY = flag_kinds.define_number(
    "probe_every", 25, "Checkpoint and probe every this many.", low=1, high=10**7, unit="steps"
)
# Research tools may read the development setup's shared data (the library never does).
SAVE_EVERY = 250  # Checkpoints at most this many steps apart (see training_config).
FULL_FSDD = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "fsdd", "recordings"
)
_FSDD_DIR = flag_kinds.define_input(
    "fsdd_dir", os.path.normpath(FULL_FSDD), "The full FSDD recordings.", kind="folder"
)
_HELDOUT = flag_kinds.define_text(
    "heldout_speaker", "george", "Speaker kept out of SSL and probes.",
    pattern=r"[a-z]+", what="an FSDD speaker's name", example="george",
)  # fmt: skip
_SSL_HELDOUT = flags.DEFINE_bool(
    "ssl_heldout_speaker",
    False,
    "Diagnostic: train the SSL run on the held-out speaker's train takes too (unlabelled); the "
    "probes still never train on that speaker. What hearing the speaker before buys.",
)
_SHARE_FRAMES = flag_kinds.define_number(
    "share_frames", 30, "Frames per clip for variance shares.", low=1, high=10_000, unit="frames"
)
_MAX_CLIPS = flag_kinds.define_number(
    "max_clips_per_split", 0, "Probe at most this many (0: all).", low=0, high=10**6, unit="clips"
)
_PROBE_STEPS = flag_kinds.define_number(
    "probe_steps", 200, "L-BFGS iterations per probe fit.", low=1, high=10**5, unit="iterations"
)
_BATCH_SIZE = flag_kinds.define_number(
    "batch_size", 16, "Windows per jitted embedding call.", low=1, high=4096, unit="windows"
)
_JSON = flag_kinds.define_output(
    "json", "", "Write every number to this JSON file too.", kind="file"
)
_PLOT = flag_kinds.define_output(
    "plot", "", "Write the learning curve to this PNG too.", kind="file"
)

TASKS = ("digits", "speakers", "heldout_digits")
POOLINGS = ("mean", "mean_std")  # Every task with each; a row's `task` key is mean pooling's.
SPLITS = fsdd.SPLITS


def ssl_files(fsdd_dir: str, heldout: str, *, include_heldout: bool = False) -> list[str]:
    """FSDD files (paths relative to fsdd_dir) of the probe's train takes of other speakers (and
    of the held-out one too with `include_heldout`)."""
    parsed = [(p, fsdd.parse_name(p)) for p in audio_folder.list_files(fsdd_dir)]
    parsed = [(p, name) for p, name in parsed if name is not None]
    speakers = sorted({speaker for _, (_, speaker, _) in parsed})
    if not speakers:
        raise ValueError(
            f"--fsdd_dir={fsdd_dir} holds no {{digit}}_{{speaker}}_{{take}}.wav recordings: give "
            "the FSDD recordings folder."
        )
    if heldout not in speakers:
        raise ValueError(
            f"--heldout_speaker={heldout!r} is not in {fsdd_dir}: choose one of {speakers}."
        )
    max_take = max(take for _, (*_, take) in parsed)
    return [
        p for p, (_, speaker, take) in parsed
        if (include_heldout or speaker != heldout) and fsdd.take_split(take, max_take) == "train"
    ]  # fmt: skip


def link_files(fsdd_dir: str, files: list[str], audio_dir: str) -> None:
    """Symlinks `files` into audio_dir; refuses a folder already holding another selection."""
    os.makedirs(audio_dir, exist_ok=True)
    wanted = {os.path.basename(f): os.path.abspath(os.path.join(fsdd_dir, f)) for f in files}
    present = set(os.listdir(audio_dir))
    if present - wanted.keys():
        raise ValueError(f"{audio_dir} holds files of another selection: use another --workdir.")
    for name in sorted(wanted.keys() - present):
        os.symlink(wanted[name], os.path.join(audio_dir, name))


def probe_steps(steps: int, every: int) -> list[int]:
    """0, every, 2 * every, ..., and the last step."""
    return sorted({*range(0, steps + 1, every), steps})


def training_config(config, workdir: str, *, heldout: str, steps: int, probe_every: int):
    """The run's config: `config` on the SSL folder, keeping the checkpoint of every probed step.
    It saves every gcd(probe_every, SAVE_EVERY) steps, so that a run stopped between probes (a
    session's end) resumes at most that many steps back."""
    config = config.copy_and_resolve_references()
    config.total_steps = steps
    config.eval_every_steps = config.keep_checkpoints_every = probe_every
    config.checkpoint_every_steps = math.gcd(probe_every, SAVE_EVERY)
    config.keep_checkpoints = 1  # The newest, to resume from (and the last step, if off-period).
    config.keep_best = 0  # Only the periodic checkpoints are probed.
    config.evals = ml_collections.ConfigDict()  # Probes run afterwards, on every checkpoint.
    config.debug_dummy_data = False
    config.dataset.name = f"fsdd_ssl_{heldout}"
    config.dataset.audio_dir = os.path.join(workdir, "ssl_audio")
    config.dataset.data_dir = os.path.join(workdir, "tfds")
    config.dataset.label_from = "none"
    return config


def train_run(config, workdir: str) -> None:
    """Trains (or resumes) unless the last checkpoint is already there."""
    done = checkpointing.finished_steps(epath.Path(workdir) / checkpointing.LATEST_DIR)
    if config.total_steps in done:
        logging.info("%s holds step %d already: not training.", workdir, config.total_steps)
        return
    train.train_and_evaluate(config, workdir)


def initial_params(config) -> dict:
    """The params a run of `config` starts from (train.py: train_state.create of its seed)."""
    create = functools.partial(train_state.create, config=config)
    return jax.jit(create)(jax.random.PRNGKey(config.seed)).params


def step_params(config, workdir: str, step: int) -> dict:
    """The params of a run of `config` in `workdir` at `step`: step 0 from `initial_params` (a
    run's checkpoints start after its first update), the others from its checkpoints."""
    if step == 0:
        return initial_params(config)
    return pretrained.load(os.path.join(workdir, checkpointing.LATEST_DIR), step)[0]


def subsample(data: dict, max_clips: int) -> dict:
    """`load_fsdd` data with at most max_clips clips per split, evenly spaced in file order (which
    is digit, speaker, take: so every digit and speaker keeps clips)."""
    if not max_clips:
        return data
    out = {"speakers": data["speakers"], "classes": data["classes"]}
    for split in SPLITS:
        n = len(data[split]["audio"])
        keep = np.unique(np.linspace(0, n - 1, min(n, max_clips)).round().astype(int))
        out[split] = {
            "audio": [data[split]["audio"][i] for i in keep],
            "digit": data[split]["digit"][keep],
            "speaker": data[split]["speaker"][keep],
        }
    return out


def task_probes(features: dict, data: dict, heldout: str, probe_cfg) -> dict:
    """{task: fit_and_score result} of every task, from clip features {split: [clips, dim]}."""
    results = {}
    for task in TASKS:
        if task == "heldout_digits":
            results[task] = linear_probe.score_heldout_speaker(features, data, heldout, probe_cfg)
        else:
            results[task] = linear_probe.score(features, data, f"fsdd_{task}", probe_cfg)
    return results


def probes(frames: dict, data: dict, heldout: str, probe_cfg) -> dict:
    """{pooling: {task: fit_and_score result}} of every pooling and task, from frames
    {split: [[frames, dim]] per clip}."""
    results = {}
    for pooling in POOLINGS:
        features = {s: np.stack([linear_probe.pool(f, pooling) for f in frames[s]]) for s in SPLITS}
        results[pooling] = task_probes(features, data, heldout, probe_cfg)
    return results


def probe_step(
    step: int, params: dict, config, data: dict, heldout: str, probe_cfg, batch_size: int,
    share_frames: int, metrics: dict,
) -> tuple[dict, dict]:  # fmt: skip
    """One probed step of a model: its table row (`row` of the `probes` results, the shares, the
    ranks and `metrics`) and its frames {split: [[frames, dim]] per clip} from one embedding pass.
    With a "projector" in `params` the row has the rank of z too ("projected_rank")."""
    frames_fn = linear_probe.model_frames(params, config, batch_size)
    frames = {s: frames_fn(data[s]["audio"]) for s in SPLITS}
    results = probes(frames, data, heldout, probe_cfg)
    label = "0 (init)" if step == 0 else str(step)
    stats = collapse_checks(frames, share_frames)
    if "projector" in params:
        z_NxP = projector.apply(params["projector"], np.concatenate(frames["test"]), config.model)
        stats["projected_rank"] = float(diagnostics.effective_rank(z_NxP))
    step_row = {"step": step, **row(label, results, stats, metrics)}
    logging.info("Probed step %d: %s", step, {t: step_row[t] for t in TASKS})
    return step_row, frames


def collapse_checks(frames: dict, share_frames: int) -> dict[str, float]:
    """`shares` and `ranks` of the test clips' frames and `health` of all, from frames
    {split: [[frames, dim]] per clip}."""
    return shares(frames["test"], share_frames) | ranks(frames["test"]) | health(frames)


def shares(test_frames: list[np.ndarray], num_frames: int) -> dict[str, float]:
    """variance_shares of the first num_frames frames of the clips at least that long."""
    long = [f[:num_frames] for f in test_frames if len(f) >= num_frames]
    if len(long) < 2:
        raise ValueError(f"{len(long)} test clips have {num_frames} frames: lower --share_frames.")
    return diagnostics.variance_shares(np.stack(long))


# SIGReg of the encoder's frames: a fixed sample as large as the recipe's SIGReg sample (32 crops
# x 50 frames), so the value reads on the scale the training log uses (Gaussian ~1, collapsed
# 0.40 * 1,600 = 640), with the recipe's 1,024 slices; both seeded, the same for every model.
HEALTH_SIGREG_ROWS = 1_600
HEALTH_SIGREG_SLICES = 1_024


def health(frames: dict) -> dict[str, float]:
    """How spread the representation is, measured the same way for any encoder's frames
    {split: [[frames, dim]] per clip} (every FSDD clip):

    - pooled_spread: the std over clips of each dimension of the mean-pooled clip embeddings,
      averaged over dimensions (0 when every clip pools to the same vector);
    - pooled_participation: the participation ratio (sum of eigenvalues)^2 / sum of their squares
      of those pooled embeddings' covariance (1: one direction holds all the spread);
    - within_clip_std: the std over a clip's frames, averaged over dimensions and clips;
    - frame_sigreg: SIGReg of HEALTH_SIGREG_ROWS frames of the test clips drawn with a fixed
      seed, centred and divided by their RMS (one scalar), so it tests shape, not scale.
    """
    clips = [f for split in SPLITS for f in frames[split]]
    pooled = np.stack([f.mean(axis=0) for f in clips]).astype(np.float64)
    eigenvalues = np.clip(np.linalg.eigvalsh(np.cov(pooled, rowvar=False)), 0.0, None)
    test = np.concatenate(frames["test"]).astype(np.float32)
    rows = np.random.default_rng(0).choice(len(test), min(HEALTH_SIGREG_ROWS, len(test)), False)
    sample = test[np.sort(rows)] - test[rows].mean(axis=0)
    sample = sample / max(float(np.sqrt(np.mean(np.square(sample)))), 1e-12)
    directions = sigreg.random_directions(
        jax.random.PRNGKey(0), sample.shape[1], HEALTH_SIGREG_SLICES
    )
    return {
        "pooled_spread": float(pooled.std(axis=0).mean()),
        "pooled_participation": float(
            eigenvalues.sum() ** 2 / max(np.square(eigenvalues).sum(), 1e-300)
        ),
        "within_clip_std": float(np.mean([f.std(axis=0).mean() for f in clips if len(f) > 1])),
        "frame_sigreg": float(sigreg.sigreg(jnp.asarray(sample), directions)),
    }


def ranks(test_frames: list[np.ndarray]) -> dict[str, float]:
    """{"encoder_rank": the effective rank of every frame of the test clips}."""
    return {"encoder_rank": float(diagnostics.effective_rank(np.concatenate(test_frames)))}


def train_metrics(records: list[dict], step: int) -> dict:
    """sigreg and invariance of the logged train step nearest `step` (ties: the earlier)."""
    train_records = [r for r in records if r.get("split") == "train" and "sigreg" in r]
    if not train_records:
        return {"metrics_step": None, "sigreg": math.nan, "invariance": math.nan}
    r = min(train_records, key=lambda r: (abs(r["step"] - step), r["step"]))
    return {"metrics_step": r["step"], "sigreg": r["sigreg"], "invariance": r["invariance"]}


def accuracies(results: dict) -> dict[str, float]:
    """The test accuracy of each task of `probes` results: mean pooling's as `task`, mean_std
    pooling's as `task_mean_std`."""
    out = {}
    for task in TASKS:
        out[task] = results["mean"][task]["test_accuracy"]
        out[f"{task}_mean_std"] = results["mean_std"][task]["test_accuracy"]
    return out


def row(label, results: dict, frame_stats: dict, metrics: dict) -> dict:
    """One table row: the `accuracies` of the `probes` results, frame statistics, training
    metrics."""
    return {"label": label, **accuracies(results), **frame_stats, **metrics, "probes": results}


COLUMNS = (  # (header, key, format); "ms": mean_std pooling.
    ("digits", "digits", "{:9.3f}"),
    ("dig ms", "digits_mean_std", "{:9.3f}"),
    ("speakers", "speakers", "{:9.3f}"),
    ("spk ms", "speakers_mean_std", "{:9.3f}"),
    ("heldout", "heldout_digits", "{:9.3f}"),
    ("held ms", "heldout_digits_mean_std", "{:9.3f}"),
    ("pos share", "position_share", "{:10.3f}"),
    ("clip share", "clip_share", "{:11.3f}"),
    ("enc rank", "encoder_rank", "{:9.1f}"),
    ("z rank", "projected_rank", "{:8.1f}"),
    ("spread", "pooled_spread", "{:8.4f}"),
    ("pooled PR", "pooled_participation", "{:10.2f}"),
    ("in-clip std", "within_clip_std", "{:12.4f}"),
    ("frame SIGReg", "frame_sigreg", "{:13.4g}"),
    ("sigreg", "sigreg", "{:10.4g}"),
    ("invariance", "invariance", "{:11.4g}"),
)


def format_table(rows: list[dict], columns=COLUMNS) -> str:
    """Fixed-width text: one line per row, "-" where a row has no such number."""
    width = max(len(str(r["label"])) for r in rows) + 2
    lines = ["step".ljust(width) + "".join(h.rjust(len(f.format(0.0))) for h, _, f in columns)]
    for r in rows:
        cells = [
            f.format(r[k]) if r.get(k) is not None else "-".rjust(len(f.format(0.0)))
            for _, k, f in columns
        ]
        lines.append(str(r["label"]).ljust(width) + "".join(cells))
    return "\n".join(lines)


def learning_curve(steps_rows: list[dict], logmel_row: dict) -> Figure:
    """Test accuracy of each probe (mean pooling) vs step; dotted: step 0 (random init), dashed:
    log-mel with mean_std pooling (its better one)."""
    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot()
    steps = [r["step"] for r in steps_rows]
    for task, color in zip(TASKS, ("C0", "C1", "C2"), strict=True):
        ax.plot(steps, [r[task] for r in steps_rows], "o-", color=color, label=task)
        ax.axhline(steps_rows[0][task], color=color, linestyle=":")
        ax.axhline(logmel_row[f"{task}_mean_std"], color=color, linestyle="--")
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="k", linestyle=":", label="random init (step 0)"),
        Line2D([], [], color="k", linestyle="--", label=f"{logmel_row['label']} mean_std"),
    ]
    ax.legend(handles=handles, fontsize=8)
    ax.set(xlabel="training step", ylabel="test accuracy", title="FSDD linear probes")
    ax.set_ylim(0, 1.02)
    return figure


def run(
    config, workdir: str, *, fsdd_dir: str, heldout: str, steps: int, probe_every: int,
    share_frames: int = 30, max_clips: int = 0, probe_steps_lbfgs: int = 200, batch_size: int = 16,
    ssl_heldout: bool = False,
) -> dict:  # fmt: skip
    """The whole experiment (see the module docstring); returns what --json gets."""
    audio_dir = os.path.join(workdir, "ssl_audio")
    link_files(fsdd_dir, ssl_files(fsdd_dir, heldout, include_heldout=ssl_heldout), audio_dir)
    config = training_config(config, workdir, heldout=heldout, steps=steps, probe_every=probe_every)
    train_run(config, workdir)

    data = subsample(fsdd.load_fsdd(fsdd_dir), max_clips)
    probe_cfg = linear_probe.default_config()
    probe_cfg.steps = probe_steps_lbfgs
    metrics_path = epath.Path(workdir) / reporting.METRICS_FILE
    records = plot.load_metrics(str(metrics_path)) if metrics_path.exists() else []

    step_rows = []
    for step in probe_steps(steps, probe_every):
        params = step_params(config, workdir, step)
        step_row, _ = probe_step(step, params, config, data, heldout, probe_cfg, batch_size,
                                 share_frames, train_metrics(records, step))  # fmt: skip
        step_rows.append(step_row)

    frames = {s: logmel.logmel_frames(data[s]["audio"]) for s in SPLITS}
    results = probes(frames, data, heldout, probe_cfg)
    logmel_stats = collapse_checks(frames, share_frames)
    logmel_rows = [row("log-mel", results, logmel_stats, {})]
    settings = dict(
        model_size=config.model.size, seed=config.seed, steps=steps, probe_every=probe_every,
        fsdd_dir=fsdd_dir, heldout_speaker=heldout, ssl_heldout_speaker=ssl_heldout,
        share_frames=share_frames,
        probe_lbfgs_steps=probe_cfg.steps, clips={s: len(data[s]["audio"]) for s in SPLITS},
    )  # fmt: skip
    return {"settings": settings, "steps": step_rows, "logmel": logmel_rows}


def run_args(argv: list[str]) -> dict:
    """The arguments of `run` that `research.supervised_ceiling.run` takes too, from their flags
    (which it shares), once the command line is checked."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _STEPS.value < 1 or _PROBE_EVERY.value < 1:
        raise app.UsageError("--steps and --probe_every must be >= 1.")
    return dict(
        fsdd_dir=os.path.abspath(_FSDD_DIR.value),
        heldout=_HELDOUT.value,
        steps=_STEPS.value,
        probe_every=_PROBE_EVERY.value,
        max_clips=_MAX_CLIPS.value,
        probe_steps_lbfgs=_PROBE_STEPS.value,
        batch_size=_BATCH_SIZE.value,
    )


def report(result: dict, rows: list[dict], columns=COLUMNS) -> None:
    """Names the config in `result`'s settings, prints `rows` as a table, writes `result` to
    --json."""
    result["settings"]["config"] = config_flags.get_config_filename(flags.FLAGS["config"])
    # The --config.* flags of the run, so each JSON names its variant: {"loss.x": value}.
    result["settings"]["config_overrides"] = config_flags.get_override_values(flags.FLAGS["config"])
    print(format_table(rows, columns))
    common.write_json(_JSON.value, result, indent=1)


def main(argv):
    if _PROBE_EVERY.value > _STEPS.value:
        cli.fail(
            f"--probe_every={_PROBE_EVERY.value} is more than --steps={_STEPS.value}: only the "
            "random init would be probed; give --probe_every at most --steps."
        )
    try:
        result = run(
            _CONFIG.value,
            os.path.abspath(_WORKDIR.value),
            **run_args(argv),
            share_frames=_SHARE_FRAMES.value,
            ssl_heldout=_SSL_HELDOUT.value,
        )
    except ValueError as e:  # Ours name the flag and the fix (a speaker not in --fsdd_dir).
        cli.fail(" ".join(str(e).split()))
    report(result, result["steps"] + result["logmel"])
    if _PLOT.value:
        plot.save_png(learning_curve(result["steps"], result["logmel"][0]), _PLOT.value)


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main, flags_parser=cli.parse_flags)
