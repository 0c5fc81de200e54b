"""Stopping a run cleanly on Ctrl-C or SIGTERM (a preempted or cancelled job).

The first SIGINT or SIGTERM asks the loop to stop after the step in flight and save it; the
process then exits 0 and a rerun resumes there. A second SIGINT exits at once, without saving.
The loop asks `should_stop(step)` after each step, and `excuses()` when the next batch fails,
which a signal sent to the whole process group (Ctrl-C) also causes by ending grain's worker
processes (an eval that fails after a stop was requested is skipped for the same reason).
"""

import os
import signal
import threading

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class Stopper:
    """Context manager that catches SIGINT/SIGTERM for the loop inside it (main thread only)."""

    def __init__(self, *, agree_every_steps: int = 1):
        """`agree_every_steps`: on several hosts, how often they compare their stop requests (a
        collective and a host sync each time); one host decides alone, every step."""
        self.requested = False
        self._agree_every = max(1, agree_every_steps)
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python's only signal thread.
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        del frame
        if self.requested and signum == signal.SIGINT:
            logging.warning("Second SIGINT: exiting now, without saving.")
            logging.flush()
            os._exit(128 + signum)
        self.requested = True
        logging.warning(
            "Got %s: stopping after this step to save a checkpoint (SIGINT again: exit at once).",
            signal.Signals(signum).name,
        )

    def should_stop(self, step: int) -> bool:
        """Whether every host stops after `step` (all hosts give the same answer)."""
        if jax.process_count() == 1:
            return self.requested
        if step % self._agree_every:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))

    def excuses(self) -> bool:
        """Whether a failure of the data is the stop's doing, to be logged and not raised: a
        stop was requested and this is the only host (on several, a failure on one host must
        still end all of them)."""
        return self.requested and jax.process_count() == 1
