"""The process set-up every command makes once its flags are parsed: a console that shows what a
user needs (library start-up and INFO noise hidden, no progress bars off a terminal), asyncio
loops that survive orbax's late callbacks, and JAX's persistent compilation cache.
"""

import asyncio
import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile
import threading

# TensorFlow's (and XLA's) C++ INFO lines hidden, their warnings kept; a user's own value wins.
_TF_CPP_MIN_LOG_LEVEL = "1"
# Printed by each of TensorFlow's two libraries as it loads, before any log setting is read.
_ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called"
_CPP_INFO_LINE = re.compile(rb"I\d{4} \S+ +\d+ \S+:\d+\] ")
# Warnings of tensorflow_datasets that name nothing a user can act on: its own deprecated call
# (`Audio.to_json_content` reads `.dtype`), and the empty folder of a dataset being built.
_TFDS_NOISE = (".dtype` is deprecated", "Variant folder %s has no %s")


def quiet_imports() -> None:
    """The part of `set_up` a program needs before it imports TensorFlow at its top (research
    scripts): TensorFlow's C++ INFO lines and its import banner hidden."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_CPP_MIN_LOG_LEVEL)
    quiet_tensorflow_import()


def set_up() -> None:
    """All of this module's set-up; each command's main() calls it first, before TensorFlow
    is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_CPP_MIN_LOG_LEVEL)
    if not _library_logs_asked_for():
        # JAX logs at INFO that it found no TPU on every machine without one; matplotlib that
        # it built its font cache.
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        logging.getLogger("matplotlib").setLevel(logging.WARNING)
    quiet_orbax_logs()
    quiet_tfds_logs()
    quiet_tensorflow_import()
    hide_progress_bars_off_terminal()
    quiet_closed_event_loops()
    enable_compilation_cache()


def _add_filter_once(filter_: logging.Filter) -> None:
    logger = _absl_logger()
    if not any(isinstance(f, type(filter_)) for f in logger.filters):
        logger.addFilter(filter_)


def _absl_logger() -> logging.Logger:
    from absl import logging as absl_logging

    return absl_logging.get_absl_logger()


def quiet_orbax_logs() -> None:
    """Hides orbax's INFO lines (dozens per save or load) so a program's own lines stay readable
    (`--verbosity=1` shows them)."""
    _add_filter_once(_OrbaxInfoFilter())


def quiet_tfds_logs() -> None:
    """Hides tensorflow_datasets' INFO lines (each shard written, each dataset_info.json read)
    and its warnings in `_TFDS_NOISE`; its other warnings stay (`--verbosity=1` shows all)."""
    _add_filter_once(_TfdsNoiseFilter())


def _in_package(record: logging.LogRecord, package: str) -> bool:
    return f"{os.sep}{package}{os.sep}" in record.pathname


def _library_logs_asked_for() -> bool:
    """Whether `--verbosity=1` (absl's DEBUG) or more asks for the library lines hidden here."""
    from absl import logging as absl_logging

    return absl_logging.get_verbosity() >= absl_logging.DEBUG


class _OrbaxInfoFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not _in_package(record, "orbax"):
            return True
        return _library_logs_asked_for()


class _TfdsNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _in_package(record, "tensorflow_datasets") or _library_logs_asked_for():
            return True
        noise = any(text in str(record.msg) for text in _TFDS_NOISE)
        return record.levelno >= logging.WARNING and not noise


def hide_progress_bars_off_terminal(stream=None) -> bool:
    """Turns TFDS's progress bars off when `stream` (stderr) is not a terminal: in a log file or
    a pipe their redraws are escape codes and carriage returns. Returns whether it did."""
    stream = sys.stderr if stream is None else stream
    if stream is not None and stream.isatty():
        return False
    # About 0.2 s after JAX; tensorflow_datasets imports TensorFlow only when it needs it.
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    return True


def _cpp_info_hidden() -> bool:
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    return level.isdigit() and int(level) >= 1


def _is_cpp_info(line: bytes) -> bool:
    return line.startswith(_ABSL_BANNER) or _CPP_INFO_LINE.match(line) is not None


@contextlib.contextmanager
def stderr_without(drop):
    """Runs the block with file descriptor 2 (C++ libraries' stderr too) sent to a temporary
    file, then writes to stderr the lines (bytes) for which `drop` is false, in order."""
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # No stderr to filter.
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured.readlines() if not drop(line))
            while kept:
                kept = kept[os.write(2, kept) :]


class _QuietTensorflowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders, and loads it through `_QuietLoader`."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow" or not _cpp_info_hidden():
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    """Runs a module's loader with absl's banner and C++ INFO lines dropped from stderr."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self._loader  # The module keeps the real one.
        with stderr_without(_is_cpp_info):
            self._loader.exec_module(module)


def quiet_tensorflow_import() -> None:
    """TensorFlow's import prints absl's pre-init banner and a oneDNN INFO line once per each of
    its two libraries, straight to file descriptor 2 and whatever TF_CPP_MIN_LOG_LEVEL says.
    While TF_CPP_MIN_LOG_LEVEL is 1 or more, its first import drops those (other lines stay)."""
    if not any(isinstance(f, _QuietTensorflowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorflowImport())


class _QuietClosingLoop(asyncio.SelectorEventLoop):
    """An event loop that settles the work left in it when it closes, and then drops callbacks
    scheduled on it, instead of raising.

    Orbax runs a restore with `run_until_complete` and closes the loop as soon as one array
    fails (a truncated checkpoint), with TensorStore's other reads in flight:
    - reads that failed in the loop's last turn hold exceptions that nobody retrieved (the
      callbacks that would have were still queued); asyncio logs each at ERROR, with its
      TensorStore error and traceback, whenever the garbage collector frees it ("Future/Task
      exception was never retrieved"), so a tool's one-line error sometimes had pages after it;
    - reads still running end later on TensorStore's threads, which call
      `call_soon_threadsafe` on the closed loop and print its "RuntimeError: Event loop is
      closed", a hundred per checkpoint.
    So `close` first cancels the tasks left and runs the callbacks already queued, as
    `asyncio.run` does before it closes a loop; callbacks scheduled after that are dropped, as
    nothing waits for their results.
    """

    def __init__(self):
        super().__init__()
        # TensorStore's threads schedule while the loop's own thread closes it: without the lock
        # a callback could pass the is_closed() check and then meet the closed loop. Reentrant:
        # objects freed while `close` holds it may schedule from the same thread.
        self._closing = threading.RLock()

    def call_soon_threadsafe(self, callback, *args, context=None):
        with self._closing:
            if self.is_closed():
                return None
            return super().call_soon_threadsafe(callback, *args, context=context)

    def close(self):
        try:
            if not self.is_running() and not self.is_closed():
                self.run_until_complete(_settle(asyncio.all_tasks(self)))
        finally:
            with self._closing:
                super().close()


async def _settle(tasks) -> None:
    """Cancels `tasks` and waits for them to end; then yields once, so the done-callbacks queued
    meanwhile (gather's, which retrieve each failed task's exception) run too."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)


class _QuietClosingLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return _QuietClosingLoop()


def quiet_closed_event_loops() -> None:
    """New asyncio loops (orbax's) settle their tasks when closed and drop late TensorStore
    callbacks (`_QuietClosingLoop`)."""
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
