"""What the benchmarks share: timing a jitted call, printing a sweep's rows as they come, and
writing their figures to --json (the research tools write theirs with it too)."""

import json
import time

import jax


def time_call(fn, *args, repeats: int) -> float:
    """Seconds per call of `fn(*args)`, averaged over `repeats` calls after one warm-up call
    (which compiles); waits for the device at both ends."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def print_row(template: str, row: dict) -> None:
    """Prints `template.format(**row)` at once (flushed), so a long sweep shows each point as it
    is measured."""
    print(template.format(**row), flush=True)


def write_json(path: str, figures, indent: int = 2) -> None:
    """Writes `figures` as JSON to `path`; an empty path (no --json) writes nothing."""
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=indent)
