r"""PNG plots of a run: training curves from metrics.jsonl, and a 2-D PCA of clip embeddings.

  python -m wavlejepa.plot --workdir=/tmp/wj/run                  # curves only
  python -m wavlejepa.plot --workdir=/tmp/wj/run --checkpoint=/tmp/wj/run --data=sample

writes `training_curves.png` (total loss, invariance, SIGReg against the run's own collapse
value and health-warning line, learning rate,
probe accuracy; eval values as dots) and, with a checkpoint, `embeddings_pca.png` (the FSDD clip
embeddings projected on their first two principal components, coloured by digit and by speaker)
into --output_dir (default: the workdir). Figures are drawn with matplotlib's Agg canvas, so no
display is needed and a notebook's backend is left alone.
"""

import io
import json
import os

import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath
from matplotlib.figure import Figure

from wavlejepa import cli, flag_kinds, runtime

# `reporting` (JAX, CLU) and the model are imported where used: `--help` is instant.
PROBE_PREFIXES = ("eval_", "probe_")  # Eval keys holding "accuracy" are probe results.


def load_metrics(path: str) -> list[dict]:
    """The records of a metrics.jsonl (local or gs://), in file order; a line cut short by a
    kill is skipped."""
    records = []
    for line in epath.Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of every record that has `key`, sorted by step."""
    pairs = sorted((r["step"], r[key]) for r in records if r.get(key) is not None)
    steps = np.array([s for s, _ in pairs], np.int64)
    return steps, np.array([v for _, v in pairs], np.float64)


def probe_keys(records: list[dict]) -> list[str]:
    """Keys of probe accuracies, e.g. eval_fsdd_digits/test_accuracy."""
    keys = {k for r in records for k in r if k.startswith(PROBE_PREFIXES) and "accuracy" in k}
    return sorted(keys)


def sigreg_lines(config: ml_collections.ConfigDict | None) -> dict[str, float]:
    """SIGReg's reference lines for a run: its collapse value (0.40 * N, N from the run's batch
    and crop) and the health warning's threshold; none without the run's config."""
    if config is None:
        return {}
    from wavlejepa import sigreg

    collapse = sigreg.sigreg_collapse_value(config)
    return {
        "collapsed (0.40 N)": collapse,
        "health warning": config.health.sigreg_collapse_fraction * collapse,
    }


def load_run_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config a training run wrote into its workdir, or None (an older run)."""
    from wavlejepa import reporting

    path = epath.Path(workdir) / reporting.CONFIG_FILE
    return ml_collections.ConfigDict(json.loads(path.read_text())) if path.exists() else None


def training_curves(records: list[dict], sigreg_marks: dict[str, float] | None = None) -> Figure:
    """Five panels: loss, invariance, SIGReg (with `sigreg_marks`, name -> value, as dashed
    lines), learning rate, probe accuracy."""
    fig = Figure(figsize=(16, 3.4), layout="constrained")
    axes = fig.subplots(1, 5)
    for ax, key, title in zip(axes[:3], ("loss", "invariance", "sigreg"),
                              ("total loss", "invariance", "SIGReg"), strict=True):  # fmt: skip
        ax.plot(*series(records, key), label="train")
        steps, values = series(records, f"eval_{key}")
        if len(steps):
            ax.plot(steps, values, "o", label="eval")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(loc="upper right")
    for i, (name, value) in enumerate((sigreg_marks or {}).items()):
        axes[2].axhline(value, color=f"C{3 + i}", linestyle="--", label=name)
    axes[2].set_yscale("log")  # From ~0.4 N at initialisation down to ~1 (Gaussian).
    axes[2].legend(loc="best")
    axes[3].plot(*series(records, "learning_rate"))
    axes[3].set_title("learning rate")
    axes[3].set_xlabel("step")
    axes[4].set_title("probe accuracy")
    axes[4].set_xlabel("step")
    keys = probe_keys(records)
    for key in keys:
        axes[4].plot(*series(records, key), "o-", label=key.split("_", 1)[1])
    if keys:
        axes[4].set_ylim(0, 1)
        axes[4].legend(loc="lower right", fontsize="small")
    else:
        axes[4].text(0.5, 0.5, "no probe results", ha="center", va="center",
                     transform=axes[4].transAxes)  # fmt: skip
    return fig


def pca_2d(x_NxD: np.ndarray) -> np.ndarray:
    """The rows of x projected on their first two principal components, [n, 2] (numpy SVD).

    Raises ValueError for fewer than two rows; warns when every row is the same (one point).
    """
    x = np.asarray(x_NxD, np.float64)
    if len(x) < 2:
        raise ValueError(f"A PCA needs two or more embeddings to spread; got {len(x)}.")
    centred = x - np.mean(x, axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    if singular[0] <= 1e-6 * max(np.linalg.norm(x), np.finfo(np.float64).tiny):
        logging.warning(
            "All %d embeddings are the same (a collapsed model?): the PCA shows one point.", len(x)
        )
    return centred @ vt[:2].T


def embedding_scatter(points_Nx2: np.ndarray, labelings: dict[str, tuple]) -> Figure:
    """One panel per labelling {title: (int labels [n], class names)}, coloured by class."""
    fig = Figure(figsize=(6 * len(labelings), 5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labelings)))
    for ax, (title, (labels, names)) in zip(axes, labelings.items(), strict=True):
        for c, name in enumerate(names):
            mask = labels == c
            ax.scatter(points_Nx2[mask, 0], points_Nx2[mask, 1], s=9, label=str(name),
                       color=f"C{c % 10}")  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize="small", markerscale=2)
    return fig


def fsdd_embedding_figure(embedder, data: str = "sample") -> Figure:
    """PCA of the mean-pooled clip embeddings of every FSDD clip, by digit and by speaker.

    `embedder`: an `embedding.Embedder`."""
    from wavlejepa.data import fsdd  # Decoding: only for this figure.

    clips_by_split = fsdd.load_fsdd(fsdd.fsdd_dir(data))
    splits = fsdd.SPLITS
    audio = [clip for s in splits for clip in clips_by_split[s]["audio"]]
    if len(audio) < 2:
        raise ValueError(
            f"--data={data} holds {len(audio)} readable FSDD recording(s): a PCA needs two or "
            "more; give a folder of several, or --data=sample."
        )
    clips = np.stack([e.clip for e in embedder.embed(audio)])
    digits = np.concatenate([clips_by_split[s]["digit"] for s in splits])
    speakers = np.concatenate([clips_by_split[s]["speaker"] for s in splits])
    return embedding_scatter(
        pca_2d(clips),
        {"clip embeddings by digit": (digits, range(10)),
         "clip embeddings by speaker": (speakers, clips_by_split["speakers"])},
    )  # fmt: skip


def save_png(figure: Figure, path: str) -> str:
    """Writes `figure` as a PNG to a local or gs:// path."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    epath.Path(path).write_bytes(buffer.getvalue())
    return path


def make_plots(
    workdir: str,
    output_dir: str = "",
    checkpoint: str = "",
    data: str = "sample",
) -> list[str]:
    """Writes the PNGs of a run (the curves of `workdir`, the PCA of `checkpoint`'s embeddings;
    either may be ""); returns their paths.

    Raises:
      FileNotFoundError: `workdir` holds no metrics.jsonl.
    """
    output_dir = output_dir or workdir or checkpoint
    paths = []
    if workdir:
        from wavlejepa import reporting

        metrics = os.path.join(workdir, reporting.METRICS_FILE)
        if not epath.Path(metrics).exists():
            raise FileNotFoundError(
                f"--workdir={workdir} holds no {reporting.METRICS_FILE}, so no training curves: "
                "give a training run's workdir, or --checkpoint alone for the embeddings' PCA "
                "(a model folder such as import_wavjepa writes)."
            )
        records = load_metrics(metrics)
        if not records:
            raise FileNotFoundError(
                f"--workdir={workdir}: its {reporting.METRICS_FILE} holds no complete record "
                "(the run logged nothing yet, or the file was cut short): plot it once the run "
                "has logged a step, or give --checkpoint alone for the embeddings' PCA."
            )
        curves = training_curves(records, sigreg_lines(load_run_config(workdir)))
        epath.Path(output_dir).mkdir(parents=True, exist_ok=True)
        paths.append(save_png(curves, os.path.join(output_dir, "training_curves.png")))
    if checkpoint:
        from wavlejepa import embedding  # JAX and the model: only for this figure.

        figure = fsdd_embedding_figure(embedding.Embedder.from_checkpoint(checkpoint), data)
        epath.Path(output_dir).mkdir(parents=True, exist_ok=True)
        paths.append(save_png(figure, os.path.join(output_dir, "embeddings_pca.png")))
    return paths


def _define_flags() -> None:
    flag_kinds.define_input(
        "workdir", "", "Run directory holding metrics.jsonl: training curves.", kind="folder"
    )
    flag_kinds.define_output(
        "output_dir", "", "Where the PNGs go (default: the workdir, else the checkpoint).",
        kind="folder",
    )  # fmt: skip
    flag_kinds.define_input(
        "checkpoint", "", "Also plot the PCA of this checkpoint's embeddings.", kind="folder"
    )
    flag_kinds.define_text(
        "data", "sample", "FSDD for the PCA: sample or a folder of recordings.",
        pattern=r"\S+", what="'sample' or a folder of FSDD recordings", example="sample",
    )  # fmt: skip


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runtime.set_up()
    args = flags.FLAGS
    if not args.workdir and not args.checkpoint:
        cli.fail("give --workdir (training curves), --checkpoint (embeddings' PCA), or both.")
    from wavlejepa import checkpointing

    try:
        paths = make_plots(args.workdir, args.output_dir, args.checkpoint, args.data)
    except (FileNotFoundError, ValueError, checkpointing.CheckpointError) as e:
        cli.fail(str(e))
    for path in paths:
        print(f"Wrote {path}")


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
