r"""Ours beside the official WavJEPA: each system's gain over its own random init, per budget.

  python -m research.anchor_compare --results_dir=research/results/anchor \
      --markdown=docs/experiments/anchor-table.md --png=docs/experiments/anchor.png
  python -m research.anchor_compare --results_dir=research/results/anchor_variants \
      --also_dir=research/results/anchor --systems='^ours_32x0\.51s$|^ours_identity'

Reads the result files of `research.learning` and `research.anchor_learning`, one per system,
budget (steps) and seed, named `<system>_<steps>steps_seed<seed>.json`. For each system and
budget: the gain of the last probed step over step 0 (the same run's random init) on each task,
best pooling against best pooling, as the mean over seeds and the spread between them
(max - min); and the health measures of the last step, mean over seeds.
"""

import collections
import glob
import json
import os
import re

import numpy as np
from absl import app
from matplotlib.figure import Figure

from wavlejepa import cli, flag_kinds, plot

_RESULTS_DIR = flag_kinds.define_input(
    "results_dir", "research/results/anchor", "Result files.", kind="folder"
)
_ALSO_DIR = flag_kinds.define_input(
    "also_dir", "", "Result files of more systems, read with --results_dir's (e.g. the study's "
    "recipe beside its variants).", kind="folder",
)  # fmt: skip
_SYSTEMS = flag_kinds.define_text(
    "systems", r".", "Keep the systems whose name this regular expression finds.",
    pattern=r"\S+", what="a regular expression without spaces", example=r"^ours_32|^ours_identity",
)  # fmt: skip
_MARKDOWN = flag_kinds.define_output("markdown", "", "Write the table here too.", kind="file")
_PNG = flag_kinds.define_output("png", "", "Write the curves here.", kind="file")
NAME = re.compile(r"(?P<system>.+)_(?P<steps>\d+)steps_seed(?P<seed>\d+)\.json$")
TASKS = ("digits", "heldout_digits", "speakers")
HEALTH = ("encoder_rank", "pooled_spread", "pooled_participation", "within_clip_std",
          "frame_sigreg")  # fmt: skip


def best(row: dict, task: str) -> float:
    """The better pooling's test accuracy."""
    return max(row[task], row[f"{task}_mean_std"])


def load(*results_dirs: str, systems: str = ".") -> dict:
    """{(system, steps): {seed: result}} of every result file of the folders whose system name
    the regular expression `systems` finds."""
    runs = collections.defaultdict(dict)
    paths = [p for d in results_dirs for p in sorted(glob.glob(os.path.join(d, "*.json")))]
    for path in paths:
        match = NAME.search(os.path.basename(path))
        if match and re.search(systems, match["system"]):
            runs[match["system"], int(match["steps"])][int(match["seed"])] = _result(path)
    return runs


def _result(path: str) -> dict:
    """A result file, checked to hold probed steps (a KeyError/JSONDecodeError names it)."""
    with open(path) as f:
        try:
            result = json.load(f)
        except json.JSONDecodeError as e:
            raise json.JSONDecodeError(f"{path} is not valid JSON ({e.msg})", e.doc, e.pos) from e
    if not isinstance(result, dict) or not result.get("steps"):
        raise KeyError(f"{path} holds no probed steps: is it a result file of research.learning?")
    return result


def gain_columns(task: str, init: list, final: list) -> dict:
    """A task's columns from its accuracy per seed at the first and the last step: the gain
    (mean over seeds) and its spread (max - min), and the mean accuracies."""
    gains = np.subtract(final, init)
    return {
        f"{task}_gain": float(gains.mean()),
        f"{task}_spread": float(gains.max() - gains.min()),
        f"{task}_init": float(np.mean(init)),
        f"{task}_final": float(np.mean(final)),
    }


def summary(runs: dict) -> list[dict]:
    """One row per (system, budget): gains (mean, spread over seeds), init and final best
    accuracies, and final health, means over seeds."""
    rows = []
    for (system, steps), by_seed in sorted(runs.items()):
        first = {s: r["steps"][0] for s, r in by_seed.items()}
        last = {s: r["steps"][-1] for s, r in by_seed.items()}
        row = {"system": system, "steps": steps, "seeds": sorted(by_seed)}
        for task in TASKS:
            init, final = ([best(r[s], task) for s in by_seed] for r in (first, last))
            row.update(gain_columns(task, init, final))
        for key in HEALTH:
            values = [last[s].get(key) for s in by_seed]
            row[key] = float(np.mean(values)) if None not in values else None
            inits = [first[s].get(key) for s in by_seed]
            row[f"{key}_init"] = float(np.mean(inits)) if None not in inits else None
        rows.append(row)
    return rows


def _gain(row: dict, task: str) -> str:
    """ "+0.012 (0.034)": the mean gain and the spread between seeds ("one seed": none yet)."""
    spread = "one seed" if len(row["seeds"]) == 1 else f"{row[task + '_spread']:.3f}"
    return f"{row[task + '_gain']:+.3f} ({spread})"


def markdown(rows: list[dict]) -> str:
    header = ("| system | steps | seeds | digits gain (spread) | unseen speaker gain (spread) | "
              "speakers gain (spread) | within-clip std (init) | enc rank (init) "
              "| pooled spread (init) | pooled PR (init) | frame SIGReg (init) |")  # fmt: skip
    lines = [header, "|" + "---|" * 11]
    health = lambda r, k, f: (
        "-" if r[k] is None else f"{f.format(r[k])} ({f.format(r[k + '_init'])})"
    )
    for r in rows:
        gains = [_gain(r, t) for t in TASKS]
        lines.append(
            f"| {r['system']} | {r['steps']} | {','.join(map(str, r['seeds']))} | "
            + " | ".join(gains) + " | "
            + " | ".join([health(r, "within_clip_std", "{:.3f}"),
                          health(r, "encoder_rank", "{:.1f}"),
                          health(r, "pooled_spread", "{:.4f}"),
                          health(r, "pooled_participation", "{:.2f}"),
                          health(r, "frame_sigreg", "{:.3g}")]) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def curves(rows: list[dict]) -> Figure:
    """Gain over own init (unseen speaker, digits), the pooled spread (log: a collapse is
    orders of magnitude) and the frames' effective rank, against the budget."""
    figure = Figure(figsize=(14, 3.6))
    panels = [("heldout_digits_gain", "unseen-speaker gain over init"),
              ("digits_gain", "digits gain over init"),
              ("pooled_spread", "pooled spread (log scale)"),
              ("encoder_rank", "frames' effective rank")]  # fmt: skip
    systems = sorted({r["system"] for r in rows})
    budgets = sorted({r["steps"] for r in rows})
    for i, (key, title) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), i + 1)
        for system in systems:
            mine = [r for r in rows if r["system"] == system and r[key] is not None]
            steps = [r["steps"] for r in mine]
            spread = key.replace("_gain", "_spread")
            errors = [r[spread] / 2 for r in mine] if spread != key else None
            ax.errorbar(steps, [r[key] for r in mine], yerr=errors, marker="o", label=system,
                        capsize=3)  # fmt: skip
        if key.endswith("_gain"):
            ax.axhline(0.0, color="k", linewidth=0.8)
        ax.set(xscale="log", xlabel="training steps", title=title)
        ax.set_xticks(budgets, labels=[f"{b:,}" for b in budgets])  # The budgets, no others.
        ax.minorticks_off()  # Matplotlib labels log-scale minor ticks (3 x 10^2) otherwise.
        if key == "pooled_spread":
            ax.set_yscale("log")
    figure.axes[2].legend(fontsize=7, loc="center right")  # The gap between the two spreads.
    figure.tight_layout()
    return figure


def main(argv):
    del argv
    folders = [_RESULTS_DIR.value] + ([_ALSO_DIR.value] if _ALSO_DIR.value else [])
    try:
        pattern = re.compile(_SYSTEMS.value)
    except re.error as e:
        cli.fail(f"--systems={_SYSTEMS.value!r} is not a regular expression ({e}).")
    try:
        rows = summary(load(*folders, systems=pattern.pattern))
    except KeyError as e:  # str() of a KeyError quotes its message.
        cli.fail(f"--results_dir={_RESULTS_DIR.value}: {e.args[0]}")
    except (json.JSONDecodeError, IndexError, TypeError) as e:
        cli.fail(f"--results_dir={_RESULTS_DIR.value}: {e}")
    if not rows:
        cli.fail(
            f"--results_dir={_RESULTS_DIR.value} holds no <system>_<steps>steps_seed<seed>.json "
            f"of a system --systems={_SYSTEMS.value!r} finds: give the folder research.learning "
            "and research.anchor_learning wrote their --json to."
        )
    table = markdown(rows)
    print(table)
    if _MARKDOWN.value:
        with open(_MARKDOWN.value, "w") as f:
            f.write(table + "\n")
    if _PNG.value:
        plot.save_png(curves(rows), _PNG.value)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
