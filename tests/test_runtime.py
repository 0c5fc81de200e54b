"""wavlejepa/runtime.py: the persistent compilation cache, orbax's INFO lines hidden, and asyncio
loops that settle their tasks when closed and drop callbacks scheduled after."""

import asyncio
import gc
import logging
import os

import jax
import pytest
from absl import logging as absl_logging

from wavlejepa import runtime


def test_compilation_cache_goes_under_the_user_cache_unless_jax_is_told(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        folder = runtime.enable_compilation_cache()
        assert folder == str(tmp_path / "wavlejepa" / "jax")
        assert jax.config.jax_compilation_cache_dir == folder
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
        assert runtime.enable_compilation_cache() == str(tmp_path / "mine")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def _record(pathname: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, pathname, 1, "message", None, None)


def test_orbax_info_lines_are_hidden_once_and_its_warnings_kept():
    logger = absl_logging.get_absl_logger()
    before = list(logger.filters)
    try:
        runtime.quiet_orbax_logs()
        runtime.quiet_orbax_logs()  # A second call adds no second filter.
        added = [f for f in logger.filters if f not in before]
        assert len(added) <= 1 and len(logger.filters) == len(before) + len(added)
        orbax_file = os.path.join("site-packages", "orbax", "checkpoint", "x.py")
        assert not logger.filter(_record(orbax_file, logging.INFO))
        assert logger.filter(_record(orbax_file, logging.WARNING))
        assert logger.filter(_record(os.path.join("wavlejepa", "train.py"), logging.INFO))
    finally:
        logger.filters[:] = before


def test_a_closed_loop_drops_late_callbacks():
    before = asyncio.get_event_loop_policy()
    try:
        runtime.quiet_closed_event_loops()
        loop = asyncio.new_event_loop()
        loop.close()
        assert loop.call_soon_threadsafe(print) is None  # asyncio's own loop raises here.
        plain = asyncio.SelectorEventLoop()
        plain.close()
        with pytest.raises(RuntimeError, match="closed"):
            plain.call_soon_threadsafe(print)
    finally:
        asyncio.set_event_loop_policy(before)


def _stop_with_work_left(loop):
    """What orbax leaves in a loop when one read fails: `run_until_complete` stops at the first
    error, with a failed task whose exception only a queued callback (gather's) would retrieve,
    and a task still waiting for its read."""

    async def fail():
        raise ValueError("OUT_OF_RANGE: Error reading")

    failed = loop.create_task(fail())
    failed.add_done_callback(lambda task: task.exception())
    waiting = loop.create_task(asyncio.sleep(3600))
    loop.call_soon(loop.stop)
    loop.run_forever()  # One turn: `failed` ends; its callback is queued for the next.
    assert failed.done() and not waiting.done()
    return failed, waiting


def _reports_after_close(loop):
    """The messages asyncio's exception handler (an ERROR log) gets once `loop` is closed with
    `_stop_with_work_left`'s tasks in it and they are freed; and whether the waiting one was
    cancelled."""
    reports = []
    loop.set_exception_handler(lambda _, context: reports.append(context["message"]))
    failed, waiting = _stop_with_work_left(loop)
    loop.close()
    cancelled = waiting.cancelled()
    del failed, waiting
    gc.collect()
    return sorted(reports), cancelled


def test_a_closing_loop_settles_the_tasks_left_in_it():
    assert _reports_after_close(runtime._QuietClosingLoop()) == ([], True)
    # asyncio's own loop logs both, with the read error's traceback, when they are freed.
    reports = ["Task exception was never retrieved", "Task was destroyed but it is pending!"]
    assert _reports_after_close(asyncio.SelectorEventLoop()) == (reports, False)
