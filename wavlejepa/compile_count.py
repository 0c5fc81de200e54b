"""Counts XLA backend compilations, to catch a train step that recompiles every step."""

import jax

# jax emits this event once per backend compilation (jax/_src/dispatch.py).
_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """`with CompileCounter() as c: ...` then `c.count` compilations and `c.seconds` spent."""

    def __init__(self):
        self.count, self.seconds = 0, 0.0
        self._active = False

    def _listener(self, event: str, duration: float, **_) -> None:
        if self._active and event == _BACKEND_COMPILE_EVENT:
            self.count += 1
            self.seconds += duration

    def __enter__(self):
        self._active = True
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        self._active = False
        jax.monitoring.unregister_event_duration_listener(self._listener)
        return False
