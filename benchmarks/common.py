"""What the benchmarks share: timing a jitted call, and writing their figures to --json."""

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


def write_json(path: str, figures, indent: int = 2) -> None:
    """Writes `figures` as JSON to `path`; an empty path (no --json) writes nothing."""
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=indent)
