r"""Each system's gain over its own random init when the probe reads K segment means in order.

  python -m research.segment_compare --results_dir=research/results/segment_probe \
      --markdown=docs/experiments/anchor-segments.md

Reads `research.segment_probe` result files named as `research.anchor_compare` reads its own
(`<system>_<steps>steps_seed<seed>.json`). For each system, budget and K: the gain of the last
probed step over step 0 (the same run's random init) on each task, the same K on both sides, as
the mean over seeds and the spread between them (max - min), and the mean accuracies.
"""

import numpy as np
from absl import app, flags

from research import anchor_compare
from wavlejepa import cli

FLAGS = flags.FLAGS
# --results_dir, --also_dir, --systems and --markdown are research.anchor_compare's flags (defined
# when it is imported), read here with the meaning they have there; this draws no figure.
TASKS = anchor_compare.TASKS
LABELS = {"digits": "digits", "heldout_digits": "unseen speaker", "speakers": "speakers"}


def summary(runs: dict) -> list[dict]:
    """One row per (system, budget, K) of `anchor_compare.load`ed segment_probe results: gains
    (mean, spread over seeds) and the mean accuracies at step 0 and at the last step."""
    rows = []
    for (system, steps), by_seed in sorted(runs.items()):
        if not all(isinstance(r["steps"], dict) for r in by_seed.values()):
            raise ValueError(
                f"{system}_{steps}steps: a result file of research.learning or anchor_learning, "
                "not of research.segment_probe; research.anchor_compare reads those."
            )
        # JSON keys are strings: the probed steps and the segment counts.
        first = {s: r["steps"][min(r["steps"], key=int)] for s, r in by_seed.items()}
        last = {s: r["steps"][max(r["steps"], key=int)] for s, r in by_seed.items()}
        counts = sorted(set.intersection(*(set(f) for f in first.values())), key=int)
        for k in counts:
            row = {"system": system, "steps": steps, "segments": int(k), "seeds": sorted(by_seed)}
            for task in TASKS:
                init = [first[s][k][task]["test_accuracy"] for s in by_seed]
                final = [last[s][k][task]["test_accuracy"] for s in by_seed]
                gains = np.subtract(final, init)
                row[f"{task}_gain"] = float(gains.mean())
                row[f"{task}_spread"] = float(gains.max() - gains.min())
                row[f"{task}_init"] = float(np.mean(init))
                row[f"{task}_final"] = float(np.mean(final))
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    header = "| system | steps | seeds | K | " + " | ".join(
        f"{LABELS[t]} gain (spread) | {LABELS[t]} init → last"
        for t in TASKS
    ) + " |"  # fmt: skip
    lines = [header, "|" + "---|" * (4 + 2 * len(TASKS))]
    for r in rows:
        cells = [r["system"], str(r["steps"]), ",".join(map(str, r["seeds"])), str(r["segments"])]
        for task in TASKS:
            spread = "one seed" if len(r["seeds"]) == 1 else f"{r[task + '_spread']:.3f}"
            cells += [f"{r[task + '_gain']:+.3f} ({spread})",
                      f"{r[task + '_init']:.3f} → {r[task + '_final']:.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.png:
        cli.fail(f"--png={FLAGS.png}: research.segment_compare draws no figure; drop the flag.")
    folders = [FLAGS.results_dir] + ([FLAGS.also_dir] if FLAGS.also_dir else [])
    try:
        rows = summary(anchor_compare.load(*folders, systems=FLAGS.systems))
    except (KeyError, ValueError) as e:  # A file that is not a result file names itself.
        cli.fail(" ".join(str(e).split()))
    if not rows:
        cli.fail(
            f"{' and '.join(folders)} hold{'s' * (len(folders) == 1)} no "
            "<system>_<steps>steps_seed<seed>.json files of research.segment_probe: give "
            "--results_dir the folder its --json went to."
        )
    table = markdown(rows)
    print(table, end="")
    if FLAGS.markdown:
        with open(FLAGS.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
