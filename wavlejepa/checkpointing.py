"""Orbax checkpoints of a run (for exact resume) and of its best models (for the embedding API).

A workdir holds two managers, so that best-model tracking can never delete the newest step that
resume needs:

  checkpoints/<step>/state/      TrainState: step, params, opt_state, rng, teacher (orbax PyTree)
                    data_iter/  grain iterator position, process_<i>-of-<n>.json per host
                    config/     the run's config (JSON)
  best/<step>/params/           params of the config.keep_best lowest eval losses
             config/
             metrics/           {"eval_loss": ...}

Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it when complete, with a
`commit_success.txt` inside; steps without that file are never restored. To read a model back:

  params, config = checkpointing.load_params(workdir)  # best/ if any, else checkpoints/
"""

import functools
import json

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from wavlejepa import model, train_state

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
COMMIT_FILE = "commit_success.txt"  # orbax's marker of a finished step (either atomicity mode).
BEST_METRIC = "eval_loss"


def latest_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """Keeps the newest config.keep_checkpoints steps; saves are asynchronous."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(config.keep_checkpoints),
        cleanup_tmp_directories=True,  # Half-written steps of a killed run.
        enable_async_checkpointing=True,
    )
    return ocp.CheckpointManager(
        epath.Path(workdir) / LATEST_DIR,
        item_names=("state", "data_iter", "config"),
        options=options,
    )


def best_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """Keeps the config.keep_best steps of lowest eval loss, ranked across restarts."""
    # best_fn rather than a BestN preservation_policy alone: orbax (0.12.8) writes each step's
    # metrics to disk, and so can rank old steps after a restart, only when best_fn is set.
    options = ocp.CheckpointManagerOptions(
        best_fn=lambda metrics: metrics[BEST_METRIC],
        best_mode="min",
        max_to_keep=config.keep_best,
        keep_checkpoints_without_metrics=False,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=True,
    )
    return ocp.CheckpointManager(
        epath.Path(workdir) / BEST_DIR, item_names=("params", "config"), options=options
    )


def committed_steps(mngr: ocp.CheckpointManager) -> list[int]:
    """Steps whose save finished; a step directory without the commit marker was cut short."""
    return [s for s in mngr.all_steps() if (mngr.directory / str(s) / COMMIT_FILE).exists()]


def save_latest(
    mngr: ocp.CheckpointManager,
    step: int,
    state: train_state.TrainState,
    data_iter: grain.DataLoaderIterator,
    config: ml_collections.ConfigDict,
) -> None:
    """Starts an async save of `state` and the data position; returns once arrays are on host,
    so the caller may donate `state` to the next step at once."""
    mngr.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(state),
            data_iter=grain.checkpoint.CheckpointSave(data_iter),
            config=ocp.args.JsonSave(config.to_dict()),
        ),
    )


def restore_latest(
    mngr: ocp.CheckpointManager,
    abstract_state: train_state.TrainState,
    data_iter: grain.DataLoaderIterator,
    config: ml_collections.ConfigDict | None = None,
) -> train_state.TrainState | None:
    """The newest finished checkpoint (data_iter is moved to its position), or None.

    `abstract_state` holds jax.ShapeDtypeStruct leaves with the shardings to restore into.
    Unfinished step directories newer than it are deleted, so the run can save those steps again.
    Keys of `config` that differ from the checkpoint's are logged (a resume with other settings).
    """
    good = committed_steps(mngr)
    for step in mngr.all_steps():
        if step not in good and (not good or step > max(good)):
            logging.warning("Deleting unfinished checkpoint %s.", mngr.directory / str(step))
            mngr.delete(step)
    if not good:
        return None
    restored = mngr.restore(
        good[-1],
        args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item=abstract_state,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
            ),
            data_iter=grain.checkpoint.CheckpointRestore(data_iter),
            config=ocp.args.JsonRestore(),
        ),
    )
    if config is not None:
        saved, current = _flatten(restored.config), _flatten(json.loads(config.to_json()))
        for key in sorted(saved.keys() | current.keys()):
            if saved.get(key) != current.get(key):
                logging.warning(
                    "Resuming with config.%s = %r; the checkpoint was trained with %r.",
                    key,
                    current.get(key, "(absent)"),
                    saved.get(key, "(absent)"),
                )
    return restored.state


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def save_best(
    mngr: ocp.CheckpointManager,
    step: int,
    params: dict,
    config: ml_collections.ConfigDict,
    eval_loss: float,
) -> None:
    """Offers `params` to the best-model manager, which keeps them if the loss is low enough."""
    if step in mngr.all_steps():  # Reached again after a resume: the same params, already there.
        return
    mngr.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.PyTreeSave(params), config=ocp.args.JsonSave(config.to_dict())
        ),
        metrics={BEST_METRIC: float(eval_loss)},
    )


def _as_tuples(value):
    """JSON turned the config's tuples into lists; the config has no lists, so turn them back."""
    if isinstance(value, dict):
        return {k: _as_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


def _step_dir(directory: str, step: int | None) -> epath.Path:
    """A step directory from a workdir, a manager directory or a step directory."""
    path = epath.Path(directory)
    if (path / COMMIT_FILE).exists():
        return path
    for sub in (BEST_DIR, LATEST_DIR):  # A workdir: its best model if it has one.
        if (path / sub).is_dir() and _finished(path / sub):
            path = path / sub
            break
    steps = _finished(path)
    if not steps:
        raise FileNotFoundError(f"No finished checkpoint in {directory}.")
    if step is None:
        return path / str(max(steps))
    if step not in steps:
        raise FileNotFoundError(f"No finished checkpoint of step {step} in {path}: {steps}.")
    return path / str(step)


def _finished(path: epath.Path) -> list[int]:
    return sorted(
        int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / COMMIT_FILE).exists()
    )


def load_config(directory: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a checkpoint was trained with (see `load_params` for `directory`)."""
    path = _step_dir(directory, step) / "config"
    config_dict = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)
    return ml_collections.ConfigDict(_as_tuples(config_dict))


def load_params(directory: str, step: int | None = None) -> tuple[dict, ml_collections.ConfigDict]:
    """Float32 params (on the default device) and the config of a checkpoint.

    Args:
      directory: a workdir (its best/ checkpoint if any, else its latest), a manager directory
        (workdir/best or workdir/checkpoints: its newest finished step) or one step directory.
      step: a step of that manager instead of the newest.
    Returns:
      (params, config): `model.embed(params, audio, config.model)` gives the embeddings.
    """
    path = _step_dir(directory, step)
    config = load_config(str(path))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.eval_shape(
        functools.partial(model.init, cfg=config.model), jax.random.PRNGKey(0)
    )
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
    )
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    if (path / "params").is_dir():
        return checkpointer.restore(
            path / "params",
            args=ocp.args.PyTreeRestore(
                item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)
            ),
        ), config
    target = {"params": abstract}  # Only the params of a full train state.
    restored = checkpointer.restore(
        path / "state",
        args=ocp.args.PyTreeRestore(
            item=target,
            restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True,
        ),
    )
    return restored["params"], config
