"""Fixtures shared by more than one test file."""

import jax
import pytest
import test_embed

from configs import cpu_debug
from wavlejepa import model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A workdir holding one saved checkpoint of cpu_debug's model at random init (key 1)."""
    config = cpu_debug.get_config()
    params = model.init(jax.random.key(1), config.model)
    workdir = str(tmp_path_factory.mktemp("run"))
    test_embed.save_checkpoint(workdir, config, params)
    return workdir
