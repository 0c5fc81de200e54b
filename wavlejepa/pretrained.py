"""Loading a trained model for use (embedding, HEAR, evaluation): `pretrained.load(path)`.

    params, config = pretrained.load("/tmp/wj/run")  # its best/ model, else its latest
    frames = model.embed(params, audio, config.model)

Resuming a run is `checkpointing.restore_latest`'s job; this module only reads params and the
config saved beside them, from whichever checkpoint kind a path holds (see `load`). Every
failure is one `checkpointing.CheckpointError` with a one-line message.
"""

import functools

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from wavlejepa import model, saved_config
from wavlejepa.checkpointing import (
    BEST_DIR,
    LATEST_DIR,
    CheckpointError,
    finished_steps,
    one_line,
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
    is_step = path.name.isdigit() and (path / "config").is_dir()  # Not a workdir named "123".
    if is_step and ocp.path.step.is_checkpoint_finalized(path):
        return path  # One step directory.
    for sub in (BEST_DIR, LATEST_DIR):  # A workdir: its best model if it has one.
        if (path / sub).is_dir() and finished_steps(path / sub):
            path = path / sub
            break
    steps = finished_steps(path)
    if not steps:
        raise CheckpointError(
            f"No finished checkpoint in {directory}: give a training run's workdir, one of its "
            "checkpoints/<step> folders, or a model folder of import_wavjepa."
        )
    if step is None:
        return path / str(max(steps))
    if step not in steps:
        raise CheckpointError(f"No finished checkpoint of step {step} in {path}: {steps}.")
    return path / str(step)


def _check_is_dir(directory: str) -> None:
    path = epath.Path(directory)  # epath: local or gs:// alike.
    if path.is_file():
        raise CheckpointError(
            f"{directory!r} is a file, not a checkpoint directory: give a training workdir "
            "(or one of its checkpoints/<step> folders)."
        )
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint directory {directory!r} does not exist.")


def load_config(directory: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a checkpoint was trained with (see `load` for `directory`)."""
    _check_is_dir(directory)
    path = _step_dir(directory, step) / "config"
    config_dict = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)
    return saved_config.with_added_keys(ml_collections.ConfigDict(_as_tuples(config_dict)))


def load(directory: str, step: int | None = None) -> tuple[dict, ml_collections.ConfigDict]:
    """Float32 params (on the default device) and the config of a trained model.

    Args:
      directory: a workdir (its best/ checkpoint if any, else its latest), a manager directory
        (workdir/best or workdir/checkpoints: its newest finished step) or one step directory;
        local or gs://. The log says which step directory was taken.
      step: a step of that manager instead of the newest.
    Returns:
      (params, config): `model.embed(params, audio, config.model)` gives the embeddings.
    Raises:
      CheckpointError: not a directory, no finished checkpoint there, or none of them loads.
        When the newest of a workdir or manager fails (truncated files), the next older is
        loaded and a warning names both.
    """
    _check_is_dir(directory)
    try:
        return _load(directory, step)
    except CheckpointError:
        raise
    except Exception as e:  # orbax/json/tensorstore errors all mean "not a usable checkpoint".
        raise CheckpointError(
            f"Cannot load a WavLeJEPA checkpoint from {directory!r}: {one_line(e)}"
        ) from e


def _load(directory: str, step: int | None) -> tuple[dict, ml_collections.ConfigDict]:
    path = _step_dir(directory, step)
    logging.debug("Loading the model of %s.", path)
    if step is not None or path == epath.Path(directory):  # The one step asked for.
        try:
            return _load_step(path)
        except Exception as e:  # Truncated or corrupt files: orbax/TensorStore/JSON errors.
            raise CheckpointError(f"Checkpoint {path} cannot be loaded: {one_line(e)}") from e
    candidates = [path.parent / str(s) for s in reversed(finished_steps(path.parent))]
    reasons = []
    for candidate in candidates:
        try:
            loaded = _load_step(candidate)
        except Exception as e:  # Truncated or corrupt files: orbax/TensorStore/JSON errors.
            reasons.append(f"step {candidate.name}: {one_line(e)}")
            continue
        for reason in reasons:  # Said only when an older one loads: else the error says it.
            logging.warning("Checkpoint %s cannot be loaded (%s).", path.parent, reason)
        if reasons:
            logging.warning("Loaded the older checkpoint %s instead.", candidate)
        return loaded
    raise CheckpointError(
        f"No checkpoint in {path.parent} can be loaded ({'; '.join(reasons)}): each is damaged "
        "(truncated or corrupt); give another run's folder, or move the damaged steps aside."
    )


def _load_step(path: epath.Path) -> tuple[dict, ml_collections.ConfigDict]:
    """`load` of one step directory: every network it holds (a run's all four; a model for use,
    such as `import_wavjepa` writes, the embedding path's two)."""
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
        held = ocp.PyTreeCheckpointHandler().metadata(path / "params").tree
        if set(held) == set(model.EMBEDDING_NETWORKS):
            abstract = {name: abstract[name] for name in model.EMBEDDING_NETWORKS}
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


def check_encoder(directory: str, model_cfg: ml_collections.ConfigDict) -> None:
    """Raises CheckpointError unless `directory` holds a model (see `load`) whose encoder is the
    network `model_cfg` builds: each differing key named, with the config that matches."""
    saved = load_config(directory).model
    differences = [
        f"model.{key}={saved.get(key)!r} there, {model_cfg.get(key)!r} here"
        for key in model.EMBEDDING_KEYS
        if _as_tuples(saved.get(key)) != _as_tuples(model_cfg.get(key))
    ]
    if differences:
        raise CheckpointError(
            f"config.init_from={directory} holds another encoder ({'; '.join(differences)}): "
            f"train it under its own model config, --config.model.<key>=<its value> for each, "
            f"or --config={directory}/config.json for a run shaped as it."
        )


def encoder_params(directory: str, model_cfg: ml_collections.ConfigDict) -> dict:
    """The embedding path's params of the model at `directory` (`check_encoder`ed against
    `model_cfg`), to train on (`config.init_from`)."""
    check_encoder(directory, model_cfg)
    params, _ = load(directory)
    return {name: params[name] for name in model.EMBEDDING_NETWORKS}
