r"""Each system's gain over its own random init when the probe reads K segment means in order.

  python -m research.segment_compare --results_dir=research/results/segment_probe \
      --markdown=docs/experiments/anchor-segments.md

Reads `research.segment_probe` result files named as `research.anchor_compare` reads its own
(`<system>_<steps>steps_seed<seed>.json`). For each system, budget and K: the gain of the last
probed step over step 0 (the same run's random init) on each task, the same K on both sides, as
the mean over seeds and the spread between them (max - min), and the mean accuracies. With
--learning_dir (the same runs' `research.learning` / `anchor_learning` result files, same names)
a row "best" more: best against best among mean, mean_std and every K, at step 0 and at the last
step.
"""

from absl import app, flags

from research import anchor_compare
from wavlejepa import cli, flag_kinds

FLAGS = flags.FLAGS
# --results_dir, --also_dir, --systems and --markdown are research.anchor_compare's flags (defined
# when it is imported), read here with the meaning they have there; this draws no figure.
_LEARNING_DIR = flag_kinds.define_input(
    "learning_dir", "", "The same runs' research.learning result files: adds best against best "
    "among mean, mean_std and the segment counts.", kind="folder",
)  # fmt: skip
TASKS = anchor_compare.TASKS
LABELS = {"digits": "digits", "heldout_digits": "unseen speaker", "speakers": "speakers"}


def _row(system: str, steps: int, segments, init: dict, final: dict) -> dict:
    """A table row from {task: [accuracy per seed]} at step 0 and at the last step."""
    row = {"system": system, "steps": steps, "segments": segments, "seeds": None}
    for task in TASKS:
        row.update(anchor_compare.gain_columns(task, init[task], final[task]))
    return row


def _accuracy(result: dict, end: str, segments: str, task: str) -> float:
    """A segment_probe result's test accuracy at its first or last probed step ("first",
    "last"; JSON keys are strings: the steps and the segment counts)."""
    step = (min if end == "first" else max)(result["steps"], key=int)
    return result["steps"][step][segments][task]["test_accuracy"]


def _best_row(system: str, steps: int, by_seed: dict, learned: dict, counts: list) -> dict:
    """The "best" row: per seed, the best of the learning file's mean and mean_std and every K
    of the segment file, at step 0 and at the last step."""
    seeds = sorted(by_seed)
    for s in seeds:
        probed = (learned[s]["steps"][0]["step"], learned[s]["steps"][-1]["step"])
        ends = tuple(int(f(by_seed[s]["steps"], key=int)) for f in (min, max))
        if probed != ends:
            raise ValueError(
                f"{system}_{steps}steps_seed{s}: the learning file's first and last steps "
                f"{probed} are not the segment file's {ends}: are they of the same run?"
            )
    at = {}
    for end, index in (("first", 0), ("last", -1)):
        at[end] = {
            t: [
                max(anchor_compare.best(learned[s]["steps"][index], t),
                    *(_accuracy(by_seed[s], end, k, t) for k in counts))
                for s in seeds
            ]
            for t in TASKS
        }  # fmt: skip
    return _row(system, steps, "best", at["first"], at["last"]) | {"seeds": seeds}


def summary(runs: dict, learning_runs: dict | None = None) -> list[dict]:
    """One row per (system, budget, K) of `anchor_compare.load`ed segment_probe results: gains
    (mean, spread over seeds) and the mean accuracies at step 0 and at the last step. With
    `learning_runs` (the same runs' learning results, loaded alike), a row "best" per (system,
    budget) whose seeds they all hold: the best of mean, mean_std and every K on each side."""
    rows = []
    for (system, steps), by_seed in sorted(runs.items()):
        if not all(isinstance(r["steps"], dict) for r in by_seed.values()):
            raise ValueError(
                f"{system}_{steps}steps: a result file of research.learning or anchor_learning, "
                "not of research.segment_probe; research.anchor_compare reads those."
            )
        seeds = sorted(by_seed)
        first_steps = [r["steps"][min(r["steps"], key=int)] for r in by_seed.values()]
        counts = sorted(set.intersection(*(set(f) for f in first_steps)), key=int)
        for k in counts:
            init = {t: [_accuracy(by_seed[s], "first", k, t) for s in seeds] for t in TASKS}
            final = {t: [_accuracy(by_seed[s], "last", k, t) for s in seeds] for t in TASKS}
            rows.append(_row(system, steps, int(k), init, final) | {"seeds": seeds})
        learned = (learning_runs or {}).get((system, steps), {})
        if set(seeds) <= set(learned):
            rows.append(_best_row(system, steps, by_seed, learned, counts))
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
        learning_runs = (
            anchor_compare.load(_LEARNING_DIR.value, systems=FLAGS.systems)
            if _LEARNING_DIR.value
            else None
        )
        rows = summary(anchor_compare.load(*folders, systems=FLAGS.systems), learning_runs)
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
