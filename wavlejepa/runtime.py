"""The process set-up every command makes once its flags are parsed: quiet JAX and orbax logs,
asyncio loops that survive orbax's late callbacks, and JAX's persistent compilation cache.
"""

import asyncio
import logging
import os


def set_up() -> None:
    """All of this module's set-up; each command's main() calls it first."""
    # JAX logs at INFO that it found no TPU on every machine without one.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    quiet_orbax_logs()
    quiet_closed_event_loops()
    enable_compilation_cache()


def quiet_orbax_logs() -> None:
    """Hides orbax's INFO lines (dozens per save or load) so a program's own lines stay readable."""
    from absl import logging as absl_logging

    logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _OrbaxInfoFilter) for f in logger.filters):
        logger.addFilter(_OrbaxInfoFilter())


class _OrbaxInfoFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


class _QuietClosingLoop(asyncio.SelectorEventLoop):
    """An event loop that drops callbacks scheduled after it closed, instead of raising.

    When orbax fails to restore one array (a truncated checkpoint), `asyncio.run` closes its loop
    while TensorStore's other reads are still in flight; each then calls `call_soon_threadsafe`
    on the closed loop, and TensorStore prints a "RuntimeError: Event loop is closed" traceback
    from its own thread, a hundred of them per checkpoint. Nothing waits for those results.
    """

    def call_soon_threadsafe(self, callback, *args, context=None):
        if self.is_closed():
            return None
        return super().call_soon_threadsafe(callback, *args, context=context)


class _QuietClosingLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return _QuietClosingLoop()


def quiet_closed_event_loops() -> None:
    """New asyncio loops (orbax's) drop late TensorStore callbacks (`_QuietClosingLoop`)."""
    if not isinstance(asyncio.get_event_loop_policy(), _QuietClosingLoopPolicy):
        asyncio.set_event_loop_policy(_QuietClosingLoopPolicy())


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache, so a second run of a tool does not compile
    again: $JAX_COMPILATION_CACHE_DIR when set (JAX reads it itself), else
    $XDG_CACHE_HOME/wavlejepa/jax (~/.cache/wavlejepa/jax). Returns the folder."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    cache_home = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    folder = os.path.join(cache_home, "wavlejepa", "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder
