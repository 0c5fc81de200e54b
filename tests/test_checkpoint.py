"""checkpointing.py and pretrained.py in process: round trip, unfinished steps, best-model policy,
loading a model for use."""

import functools
import os
import shutil
from unittest import mock

import chex
import jax
import numpy as np
import pytest

from configs import cpu_debug
from wavlejepa import checkpointing, pretrained, train_state
from wavlejepa.data import pipeline

# An exception raised where no caller sees it (orbax's or TensorStore's threads, asyncio callbacks)
# fails the test that was running, rather than passing with a warning.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def config():
    return cpu_debug.get_config()


@pytest.fixture(scope="module")
def state(config):
    # One device: these tests are about files, not sharding.
    return jax.jit(functools.partial(train_state.create, config=config))(jax.random.PRNGKey(3))


def _data_iter(config):
    loader = pipeline.create_train_loader(
        config.dataset, batch_size=8, seed=0, shard_index=0, shard_count=1, dummy=True
    )
    return iter(loader)


def _abstract(state):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def _save(workdir, config, state, step, data_iter):
    mngr = checkpointing.latest_manager(workdir, config)
    checkpointing.save_latest(mngr, step, state.replace(step=state.step + step), data_iter, config)
    mngr.wait_until_finished()
    mngr.close()


def test_round_trip_restores_state_and_data_position_exactly(tmp_path, config, state):
    data_iter = _data_iter(config)
    for _ in range(3):
        next(data_iter)
    _save(tmp_path, config, state, 3, data_iter)
    expected_batch = next(data_iter)

    fresh_iter = _data_iter(config)
    mngr = checkpointing.latest_manager(tmp_path, config)
    restored = checkpointing.restore_latest(mngr, _abstract(state), fresh_iter)
    chex.assert_trees_all_equal(restored, state.replace(step=state.step + 3))
    np.testing.assert_array_equal(next(fresh_iter)["audio"], expected_batch["audio"])
    assert sorted(os.listdir(tmp_path / "checkpoints/3")) == [
        "_CHECKPOINT_METADATA", "commit_success.txt", "config", "data_iter", "state"
    ]  # fmt: skip


@pytest.mark.parametrize("every, kept", [(0, [45, 50]), (20, [20, 40, 45, 50])])
def test_the_latest_are_kept_and_every_multiple_of_keep_checkpoints_every(
    tmp_path, config, state, every, kept
):
    config = config.copy_and_resolve_references()
    config.keep_checkpoints, config.keep_checkpoints_every = 2, every
    data_iter = _data_iter(config)
    mngr = checkpointing.latest_manager(tmp_path, config)
    for step in range(5, 55, 5):  # As a run with checkpoint_every_steps=5 saves.
        checkpointing.save_latest(mngr, step, state, data_iter, config)
    mngr.wait_until_finished()
    mngr.close()
    assert checkpointing.finished_steps(tmp_path / checkpointing.LATEST_DIR) == kept


def test_a_checkpoint_saved_before_keep_checkpoints_every_reads_it_as_0(tmp_path, config, state):
    old = config.copy_and_resolve_references()
    del old["keep_checkpoints_every"]
    mngr = checkpointing.latest_manager(tmp_path, config)
    checkpointing.save_latest(mngr, 1, state, _data_iter(config), old)  # The config it records.
    mngr.wait_until_finished()
    mngr.close()
    loaded = pretrained.load_config(str(tmp_path / checkpointing.LATEST_DIR))
    assert "keep_checkpoints_every" not in old and loaded.keep_checkpoints_every == 0


def test_resuming_with_another_config_logs_each_changed_key(tmp_path, config, state):
    _save(tmp_path, config, state, 1, _data_iter(config))
    changed = config.copy_and_resolve_references()
    changed.optimizer.peak_lr = 1.5e-4
    mngr = checkpointing.latest_manager(tmp_path, changed)
    with mock.patch.object(checkpointing.logging, "warning") as warning:
        checkpointing.restore_latest(mngr, _abstract(state), _data_iter(config), changed)
    (call,) = warning.call_args_list
    assert call.args[1:] == ("optimizer.peak_lr", 1.5e-4, config.optimizer.peak_lr)


def test_empty_workdir_restores_nothing(tmp_path, config, state):
    mngr = checkpointing.latest_manager(tmp_path, config)
    assert checkpointing.restore_latest(mngr, _abstract(state), _data_iter(config)) is None


def test_unfinished_checkpoints_are_skipped_and_removed(tmp_path, config, state):
    _save(tmp_path, config, state, 2, _data_iter(config))
    ckpts = tmp_path / "checkpoints"
    # Saves cut short before orbax's rename: one whole but for the rename, one barely begun.
    shutil.copytree(ckpts / "2", ckpts / "4.orbax-checkpoint-tmp-1234")
    (ckpts / "6.orbax-checkpoint-tmp-5678/state").mkdir(parents=True)
    assert checkpointing.finished_steps(ckpts) == [2]

    mngr = checkpointing.latest_manager(tmp_path, config)
    restored = checkpointing.restore_latest(mngr, _abstract(state), _data_iter(config))
    assert int(restored.step) == int(state.step) + 2
    assert sorted(os.listdir(ckpts)) == ["2"]
    # The run can save step 4 again.
    checkpointing.save_latest(mngr, 4, restored, _data_iter(config), config)
    mngr.wait_until_finished()
    assert checkpointing.finished_steps(ckpts) == [2, 4]


def test_best_manager_keeps_the_lowest_losses_across_restarts(tmp_path, config, state):
    config = config.copy_and_resolve_references()
    config.keep_best = 2
    mngr = checkpointing.best_manager(tmp_path, config)
    for step, loss in [(10, 5.0), (20, 3.0), (30, 4.0)]:
        checkpointing.save_best(mngr, step, state.params, config, loss)
    mngr.wait_until_finished()
    assert mngr.all_steps() == [20, 30]

    mngr = checkpointing.best_manager(tmp_path, config)  # A resumed run.
    checkpointing.save_best(mngr, 30, state.params, config, 4.0)  # Reached again: skipped.
    checkpointing.save_best(mngr, 40, state.params, config, 6.0)  # Worse than both: dropped.
    checkpointing.save_best(mngr, 50, state.params, config, 1.0)
    mngr.wait_until_finished()
    assert mngr.all_steps() == [20, 50]


def test_pretrained_load_from_workdir_manager_or_step_directory(tmp_path, config, state):
    _save(tmp_path, config, state, 5, _data_iter(config))
    expected_config = config.to_dict()
    for directory in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints/5"):
        params, loaded = pretrained.load(str(directory))
        chex.assert_trees_all_equal(params, state.params)
        assert loaded.to_dict() == expected_config

    best = checkpointing.best_manager(tmp_path, config)
    best_params = jax.tree.map(lambda x: x + 1, state.params)
    checkpointing.save_best(best, 5, best_params, config, 1.0)
    best.wait_until_finished()
    params, _ = pretrained.load(str(tmp_path))  # A workdir: its best model first.
    chex.assert_trees_all_equal(params, best_params)
    with pytest.raises(checkpointing.CheckpointError, match="step 7"):
        pretrained.load(str(tmp_path / "checkpoints"), step=7)


def _truncate_arrays(step_dir):
    """Cuts every array data file of a saved step to half its size (a disk that filled up)."""
    for root, _, names in os.walk(step_dir):
        for name in names:
            if os.path.basename(root) == "d":  # ocdbt's data folders.
                path = os.path.join(root, name)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)


def test_a_truncated_checkpoint_falls_back_to_the_older_one(tmp_path, config, state):
    data_iter = _data_iter(config)
    _save(tmp_path, config, state, 3, data_iter)
    _save(tmp_path, config, state, 5, data_iter)
    _truncate_arrays(tmp_path / "checkpoints/5/state")
    mngr = checkpointing.latest_manager(tmp_path, config)
    with mock.patch.object(checkpointing.logging, "warning") as warning:
        restored = checkpointing.restore_latest(mngr, _abstract(state), _data_iter(config))
    chex.assert_trees_all_equal(restored, state.replace(step=state.step + 3))
    messages = [call.args[0] % call.args[1:] for call in warning.call_args_list]
    assert "checkpoints/5 cannot be restored" in messages[0] and len(messages[0]) < 400
    assert "older checkpoint" in messages[1] and "checkpoints/3" in messages[1]
    # Loading for use falls back the same way; a step asked for by number does not.
    with mock.patch.object(pretrained.logging, "warning") as warning:
        params, _ = pretrained.load(str(tmp_path / "checkpoints"))
    chex.assert_trees_all_equal(params, state.params)
    assert "Loaded the older checkpoint" in warning.call_args_list[-1].args[0]
    with pytest.raises(checkpointing.CheckpointError, match="checkpoints/5"):  # The one asked.
        pretrained.load(str(tmp_path / "checkpoints"), step=5)
    # With no good checkpoint left: one error naming the folder, not a fresh start.
    _truncate_arrays(tmp_path / "checkpoints/3/state")
    with pytest.raises(checkpointing.CheckpointError, match="No checkpoint in .* can be restored"):
        checkpointing.restore_latest(mngr, _abstract(state), _data_iter(config))


def test_resuming_a_model_of_another_shape_is_one_clear_error(tmp_path, config, state):
    _save(tmp_path, config, state, 2, _data_iter(config))
    other = config.copy_and_resolve_references()
    other.model.encoder_width = 2 * config.model.encoder_width
    mngr = checkpointing.latest_manager(tmp_path, other)
    with pytest.raises(checkpointing.CheckpointError) as error:
        checkpointing.restore_latest(mngr, _abstract(state), _data_iter(config), other)
    message = str(error.value)
    assert "another shape" in message and "new --workdir" in message
    assert f"model.encoder_width: {config.model.encoder_width} in the checkpoint" in message
    assert len(message.splitlines()) == 1
