"""Orbax checkpoints of a run (for exact resume) and of its best models (for the embedding API).

A workdir holds two managers, so that best-model tracking can never delete the newest step that
resume needs:

  checkpoints/<step>/state/      TrainState: step, params, opt_state, rng (orbax PyTree)
                    data_iter/  grain iterator position, process_<i>-of-<n>.json per host
                    config/     the run's config (JSON)
  best/<step>/params/           params of the config.keep_best lowest eval losses
             config/
             metrics/           {"eval_loss": ...}

Which steps are finished is orbax's call (`finished_steps`): on a local disk a step is written
under `<step>.orbax-checkpoint-tmp-*` and renamed when complete, on GCS it is finished once its
`commit_success.txt` is written. Unfinished steps are never restored. To read a model back for
use: `params, config = pretrained.load(workdir)` (best/ if any, else checkpoints/).
"""

import json

import grain
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from wavlejepa import train_state

# Model keys whose change makes a checkpoint's params another shape.
_SHAPE_KEYS = ("conv_kernels", "conv_strides", "conv_channels", "encoder_width", "encoder_depth",
               "encoder_mlp_dim", "predictor_width", "predictor_depth", "predictor_mlp_dim",
               "projector_hidden_dims", "projector_dim")  # fmt: skip

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
BEST_METRIC = "eval_loss"


def latest_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """Keeps the newest config.keep_checkpoints steps, and every multiple of
    config.keep_checkpoints_every (0: none); saves are asynchronous."""
    policies = [ocp.checkpoint_managers.LatestN(config.keep_checkpoints)]
    if config.keep_checkpoints_every:
        policies.append(ocp.checkpoint_managers.EveryNSteps(config.keep_checkpoints_every))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
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


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, cannot be restored, or holds another model; the message
    names it and the fix."""


def one_line(error: BaseException) -> str:
    """An exception as one short line (orbax and TensorStore errors run to pages)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    # TensorStore appends "See full TensorStore details: <bound method ...>", a repr, not text.
    text = text.split(" See full TensorStore details")[0].rstrip(" .")
    return f"{type(error).__name__}: {text[:200]}"


def shape_mismatch(saved: dict, config: ml_collections.ConfigDict) -> str:
    """How `config`'s model differs in shape from a checkpoint's saved config, or ""."""
    differences = []
    current = json.loads(config.to_json())
    for key in _SHAPE_KEYS:
        was, now = saved.get("model", {}).get(key), current["model"].get(key)
        if was != now:
            differences.append(f"model.{key}: {was} in the checkpoint, {now} here")
    return "; ".join(differences)


def check_run_record(config_file: epath.Path, config: ml_collections.ConfigDict) -> None:
    """Raises CheckpointError when `config_file` (a workdir's config.json, the run's record of
    itself) holds a model of another shape than `config`'s: checked before anything is written,
    so that record is never replaced by another model's config."""
    if not config_file.exists():
        return
    try:
        saved = json.loads(config_file.read_text())
    except ValueError as e:  # A truncated write: nothing left to keep, so it is written again.
        logging.warning("%s is not JSON (%s); it is written again.", config_file, one_line(e))
        return
    if mismatch := shape_mismatch(saved, config):
        raise CheckpointError(
            f"{config_file.parent} holds a run of a model of another shape ({mismatch}); "
            "nothing was written. Use a new --workdir for this config, or resume that run "
            f"with the config it recorded: --config={config_file} (overrides such as "
            "--config.total_steps=... still apply)."
        )


def finished_steps(directory: str | epath.Path) -> list[int]:
    """The steps of a manager directory whose save finished, oldest first (orbax's own test:
    renamed from the tmp name, or holding the commit marker where saves are not renamed)."""
    return sorted(ocp.path.step.checkpoint_steps(directory))


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
    A finished checkpoint that fails to restore (truncated files) is named in one warning line
    and the next older one is tried.

    Raises:
      CheckpointError: the checkpoint holds a model of another shape than `config`'s, or no
        finished checkpoint can be restored.
    """
    good = finished_steps(mngr.directory)
    for step in mngr.all_steps():
        if step not in good and (not good or step > max(good)):
            logging.warning("Deleting unfinished checkpoint %s.", mngr.directory / str(step))
            mngr.delete(step)
    for step in reversed(good):
        where = mngr.directory / str(step)
        try:
            saved = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
            if config is not None and (mismatch := shape_mismatch(saved.config, config)):
                raise CheckpointError(
                    f"{mngr.directory.parent} holds a model of another shape ({mismatch}). "
                    "Use a new --workdir for this config, or resume with the checkpoint's "
                    f"config ({mngr.directory.parent / 'config.json'})."
                )
            restored = mngr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(
                        item=abstract_state,
                        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
                    ),
                    data_iter=grain.checkpoint.CheckpointRestore(data_iter),
                    config=ocp.args.JsonRestore(),
                ),
            )
        except CheckpointError:
            raise
        except Exception as e:  # Truncated or corrupt files: orbax/TensorStore/JSON errors.
            logging.warning("Checkpoint %s cannot be restored (%s).", where, one_line(e))
            continue
        if step != good[-1]:
            logging.warning("Resuming from the older checkpoint %s instead.", where)
        if config is not None:
            _log_config_changes(restored.config, config)
        return restored.state
    if good:
        raise CheckpointError(
            f"No checkpoint in {mngr.directory} can be restored (steps {good}; reasons above). "
            "Move that folder aside to start afresh."
        )
    return None


def _log_config_changes(saved: dict, config: ml_collections.ConfigDict) -> None:
    """Logs each key a resume changes (a resume with other settings is allowed, and visible)."""
    saved, current = _flatten(saved), _flatten(json.loads(config.to_json()))
    for key in sorted(saved.keys() | current.keys()):
        if saved.get(key) != current.get(key):
            logging.warning(
                "Resuming with config.%s = %r; the checkpoint was trained with %r.",
                key,
                current.get(key, "(absent)"),
                saved.get(key, "(absent)"),
            )


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


def save_model(
    directory: str | epath.Path, params: dict, config: ml_collections.ConfigDict
) -> None:
    """A model for use at `directory`: `config.json` and `best/0/{params,config}`, the layout
    `pretrained.load` reads from a workdir (`import_wavjepa` writes one)."""
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(config.to_json_best_effort(indent=2))
    with ocp.CheckpointManager(directory / BEST_DIR, item_names=("params", "config")) as mngr:
        mngr.save(
            0,
            args=ocp.args.Composite(
                params=ocp.args.PyTreeSave(params), config=ocp.args.JsonSave(config.to_dict())
            ),
        )
        mngr.wait_until_finished()
