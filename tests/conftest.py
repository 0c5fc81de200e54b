"""Fixtures shared by more than one test file."""

import jax
import pytest
import test_embed

from configs import cpu_debug
from wavlejepa import model, runtime


@pytest.fixture(autouse=True, scope="session")
def _orbax_loops_as_the_commands_set_them_up():
    """Tests that restore in process run orbax on the asyncio loops every command sets up
    (runtime.set_up). On asyncio's own loops, TensorStore's reads still in flight when orbax
    closes the loop after a failed restore (a truncated checkpoint) raise "Event loop is closed"
    on TensorStore's threads, which pytest reports as PytestUnraisableExceptionWarning in
    whichever test is running then."""
    runtime.quiet_closed_event_loops()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A workdir holding one saved checkpoint of cpu_debug's model at random init (key 1)."""
    config = cpu_debug.get_config()
    params = model.init(jax.random.key(1), config.model)
    workdir = str(tmp_path_factory.mktemp("run"))
    test_embed.save_checkpoint(workdir, config, params)
    return workdir
