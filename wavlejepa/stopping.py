"""Stopping a run cleanly on Ctrl-C or SIGTERM (a preempted or cancelled job).

The loop asks `should_stop(step)` after each step; when it says yes, the loop saves that step
and returns, the process exits 0 and a rerun resumes there.

One host: the first SIGINT or SIGTERM asks the loop to stop after the step in flight. A second
SIGINT exits at once, without saving. `excuses()` tells the loop that a failure of the next
batch is the stop's doing: a signal sent to the whole process group (Ctrl-C) also ends grain's
worker processes (an eval that fails after a stop was requested is skipped for the same reason).

Several hosts: SIGTERM is JAX's preemption notice. `jax.distributed.initialize` starts the
preemption service, which catches SIGTERM on any host and agrees with every host on the first
step they can all stop at; orbax's `reached_preemption(step)` is true on every host at that
step, so all of them save the same one. No Python handler is installed there (it would replace
the service's). If the service is off (`jax_enable_preemption_service=False`), SIGTERM ends
the run and a rerun resumes from the last periodic checkpoint.
"""

import os
import signal
import threading

import jax
import orbax.checkpoint as ocp
from absl import logging


class Stopper:
    """Context manager that catches SIGINT/SIGTERM for the loop inside it (one host, main
    thread); on several hosts it asks orbax whether the preemption sync point is reached."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        one_host = jax.process_count() == 1
        if one_host and threading.current_thread() is threading.main_thread():
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
        """Whether to stop after `step`; on several hosts, every host gives the same answer
        (call it at every step on every host: the sync point is one step)."""
        if jax.process_count() == 1:
            return self.requested
        if ocp.multihost.reached_preemption(step):
            self.requested = True
            logging.warning("Preemption notice: every host stops and saves at step %d.", step)
        return self.requested

    def excuses(self) -> bool:
        """Whether a failure of the data is the stop's doing, to be logged and not raised: a
        stop was requested and this is the only host (on several, a failure on one host must
        still end all of them)."""
        return self.requested and jax.process_count() == 1
