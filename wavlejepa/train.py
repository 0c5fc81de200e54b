"""The training program: `train_step` over a data-parallel mesh, with evals and exact resume.

`train_and_evaluate(config, workdir)` reads like a script, in sections: config, mesh, data,
abstract state, shardings, restore, evaluators, loop. Params are replicated and the batch is
sharded over one "data" axis of every device on every host; each host feeds its own data shard.
"""

import functools
import itertools

import grain
import jax
import ml_collections
import numpy as np
from absl import logging
from clu import periodic_actions
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from wavlejepa import (
    checkpointing,
    cli,
    config_validation,
    evaluators,
    model_sizes,
    reporting,
    stopping,
    train_state,
    train_step,
)
from wavlejepa.data import pipeline


def _global_batch(batch: dict, sharding: NamedSharding) -> dict:
    """This host's numpy batch -> one global array sharded over all devices of all hosts."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def held_out_metrics(
    eval_fn, state: train_state.TrainState, eval_loader: grain.DataLoader | None, config, sharding
) -> dict[str, float]:
    """Mean held-out losses over config.dataset.eval_batches batches, then config.evals."""
    results = {}
    if eval_loader is not None:
        batches = itertools.islice(iter(eval_loader), config.dataset.eval_batches)
        per_batch = [jax.device_get(eval_fn(state, _global_batch(b, sharding))) for b in batches]
        if not per_batch:
            raise ValueError(f"Split {config.dataset.eval_split!r} gave no eval batch.")
        results = {k: float(np.mean([m[k] for m in per_batch])) for k in per_batch[0]}
    results.update(evaluators.run_all(state.params, config))
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train_state.TrainState:
    """Trains (resuming from the latest checkpoint in workdir) and returns the final state."""
    workdir = epath.Path(workdir)

    # Config: the size picks the model's numbers; then every mistake we can see, before compute.
    if config.model.size in model_sizes.SIZES:
        config = ml_collections.ConfigDict(config.to_dict())
        config.model = model_sizes.resolve(config.model)
    config_validation.validate(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / reporting.CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
        logging.info("Config written to %s", workdir / reporting.CONFIG_FILE)
    cli.quiet_orbax_logs()

    # Mesh: one "data" axis over every device of every host (in the interconnect's order). Auto
    # axes: shardings propagate through model code written without sharding annotations.
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    logging.info(
        "%d devices on %d hosts; this is host %d.",
        jax.device_count(),
        jax.process_count(),
        jax.process_index(),
    )

    # Data: this host's shard, batch_size / hosts crops per step.
    host_batch = config.batch_size // jax.process_count()
    if not config.debug_dummy_data:
        if jax.process_index() == 0:
            pipeline.ensure_built(config.dataset)
        multihost_utils.sync_global_devices("dataset built")
    shard = dict(
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        dummy=config.debug_dummy_data,
    )
    train_iter = iter(
        pipeline.create_train_loader(
            config.dataset, batch_size=host_batch, seed=config.seed, **shard
        )
    )
    eval_loader = None
    if config.dataset.eval_batches:
        eval_loader = pipeline.create_eval_loader(config.dataset, batch_size=host_batch, **shard)

    # State: shapes without allocating, then shardings (params replicated).
    create = functools.partial(train_state.create, config=config)
    rng = jax.random.PRNGKey(config.seed)
    abstract_state = jax.eval_shape(create, rng)
    state_sharding = jax.tree.map(lambda _: replicated, abstract_state)
    num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    logging.info("Model %s: %.2f M params.", model_sizes.describe(config.model), num_params / 1e6)

    # Restore the latest finished checkpoint (and data position), else initialise.
    latest_mngr = checkpointing.latest_manager(workdir, config)
    best_mngr = checkpointing.best_manager(workdir, config) if config.keep_best else None
    state = checkpointing.restore_latest(
        latest_mngr,
        jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
            abstract_state,
            state_sharding,
        ),
        train_iter,
        config,
    )
    if state is None:
        state = jax.jit(create, out_shardings=state_sharding)(rng)
        logging.info("No checkpoint in %s: starting from scratch.", workdir)
    start_step = int(jax.device_get(state.step))
    if start_step:
        logging.info("Resuming from the checkpoint of step %d.", start_step)

    train_fn = jax.jit(
        functools.partial(train_step.train_step, config=config),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
    eval_fn = jax.jit(
        functools.partial(train_step.eval_step, config=config),
        in_shardings=(state_sharding, batch_sharding),
        out_shardings=replicated,
    )

    # Evaluators and periodic work.
    reporter = reporting.Reporter(workdir, config, start_step=start_step)
    progress = periodic_actions.ReportProgress(
        num_train_steps=config.total_steps, every_steps=config.log_every_steps
    )
    hooks = [progress]
    if config.profile.enabled and jax.process_index() == 0:
        hooks.append(
            periodic_actions.Profile(
                logdir=workdir,
                first_profile=config.profile.first_step,
                num_profile_steps=config.profile.num_steps,
                profile_duration_ms=None,
                every_secs=None,
            )
        )

    stop = stopping.Stopper()

    def run_eval(step, t, state):
        del t
        reporter.flush()  # Stop here rather than evaluate after a non-finite step.
        try:
            with progress.timed("eval"):
                results = held_out_metrics(eval_fn, state, eval_loader, config, batch_sharding)
        except Exception:
            if not stop.requested:
                raise
            logging.warning("Skipping the eval of step %d: its data workers stopped too.", step)
            return
        if results:
            reporter.write(step, "eval", results)
        if best_mngr is not None and "loss" in results and step > 0:
            checkpointing.save_best(best_mngr, step, state.params, config, results["loss"])

    def save_checkpoint(step, t, state):
        del t
        reporter.flush()  # Never save the params of a non-finite step.
        with progress.timed("checkpoint"):
            checkpointing.save_latest(latest_mngr, step, state, train_iter, config)

    eval_action = periodic_actions.PeriodicCallback(
        every_steps=config.eval_every_steps, on_steps=[config.total_steps], callback_fn=run_eval
    )
    checkpoint_action = periodic_actions.PeriodicCallback(
        every_steps=config.checkpoint_every_steps,
        on_steps=[config.total_steps],
        callback_fn=save_checkpoint,
    )

    # Loop. `step` counts updates done; its metrics are read after the next step is dispatched.
    if start_step == 0 and config.eval_before_training:
        run_eval(0, None, state)  # The untrained model's figures: the baseline of this run.
    logging.info("Training steps %d..%d.", start_step + 1, config.total_steps)
    try:
        with stop:
            for step in range(start_step + 1, config.total_steps + 1):
                try:
                    host_batch = next(train_iter)
                except Exception:
                    if not stop.excuses():
                        raise
                    # Ctrl-C or a SIGTERM sent to the whole process group ended grain's worker
                    # processes too: save the last step taken (the data position is still known).
                    logging.warning("The data workers stopped too; saving step %d.", step - 1)
                    if latest_mngr.latest_step() != step - 1:
                        save_checkpoint(step - 1, None, state)
                    break
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, metrics = train_fn(state, _global_batch(host_batch, batch_sharding))
                reporter.train_step(step, metrics)
                for hook in hooks:
                    hook(step)
                eval_action(step, state=state)
                saved = checkpoint_action(step, state=state)
                if stop.should_stop(step):
                    if not saved:
                        save_checkpoint(step, None, state)
                    logging.warning("Stopped at step %d; its checkpoint is saved.", step)
                    break
            reporter.flush()
    finally:
        # Whatever happened, what was saved is finished on disk before we return or raise.
        latest_mngr.wait_until_finished()
        if best_mngr is not None:
            best_mngr.wait_until_finished()
        reporter.close()
    return state
