"""The last lines of a training run: where its checkpoint is, whether training helped, what next.

The verdict rests on the held-out loss (the first and last evals of metrics.jsonl, same clips and
same masks), whose spread over eval batches is far smaller than what training changes; a probe
accuracy is shown with its binomial standard error, so a change within noise reads as such.
"""

import json
import math

from etils import epath

from wavlejepa import reporting

# A change counts when it is this many standard errors of the difference.
SIGNIFICANT_SEM = 3.0


def _evals(workdir: epath.Path) -> list[dict]:
    path = workdir / reporting.METRICS_FILE
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("split") == "eval" and "eval_loss" in r]


def _with_sem(record: dict, key: str) -> str:
    sem = record.get(f"{key}_sem")
    return f"{record[key]:.3f}" + (f" ± {sem:.3f}" if sem is not None else "")


def loss_verdict(first: dict, last: dict) -> str:
    """One sentence on the held-out loss from `first` to `last` (eval records)."""
    change = last["eval_loss"] - first["eval_loss"]
    sems = [r.get("eval_loss_sem") for r in (first, last)]
    noise = math.hypot(*sems) if None not in sems else None
    span = f"from {_with_sem(first, 'eval_loss')} to {_with_sem(last, 'eval_loss')}"
    if noise is None or noise == 0.0:
        return f"Held-out loss went {span} (one eval batch: no spread to judge it by)."
    ratio = abs(change) / noise
    if ratio < SIGNIFICANT_SEM:
        return (
            f"No clear change: the held-out loss went {span}, within {ratio:.1f} standard errors."
        )
    helped = "Training helped" if change < 0 else "Training hurt"
    verb = "fell" if change < 0 else "rose"
    return (
        f"{helped}: the held-out loss {verb} {span} ({ratio:.0f} standard errors) on clips "
        "it never trained on."
    )


def _accuracy_lines(first: dict, last: dict) -> list[str]:
    lines = []
    for key in sorted(k for k in last if k.endswith("/test_accuracy") and k in first):
        name = key[len("eval_") :].removesuffix("/test_accuracy")
        count = last.get(key.replace("/test_accuracy", "/test_examples"))
        line = f"Probe {name}: test accuracy {first[key]:.3f} -> {last[key]:.3f}"
        if count:
            p = last[key]
            sem = math.sqrt(max(p * (1 - p), 1e-12) / count) * math.sqrt(2)
            within = abs(last[key] - first[key]) < SIGNIFICANT_SEM * sem
            line += f" on {int(count)} clips (a change's standard error: {sem:.3f}" + (
                "; too few clips to tell)" if within else ")"
            )
        lines.append(line)
    return lines


def lines(workdir: str, audio_dir: str | None = None) -> list[str]:
    """The run's closing summary as lines of text (nothing when it has no eval yet)."""
    workdir = epath.Path(workdir)
    evals = _evals(workdir)
    out = [f"Run in {workdir}: checkpoints in {workdir / 'checkpoints'}."]
    if evals:
        first, last = evals[0], evals[-1]
        out.append(
            f"Held-out loss at step {first['step']}: {_with_sem(first, 'eval_loss')}; "
            f"at step {last['step']}: {_with_sem(last, 'eval_loss')}."
        )
        if last["step"] > first["step"]:
            out.append(loss_verdict(first, last))
            out.extend(_accuracy_lines(first, last))
    source = audio_dir or "YOUR_AUDIO_DIR"
    out += [
        "Next: embed audio with the trained encoder, or probe it:",
        f"  python -m wavlejepa.embed --checkpoint={workdir} --input={source} "
        f"--output={workdir / 'embeddings.npz'}",
        f"  python -m wavlejepa.evaluate --checkpoint={workdir}",
    ]
    return out
