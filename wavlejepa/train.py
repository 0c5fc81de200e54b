"""The training program: `train_step` over a data-parallel mesh, with evals and exact resume.

`train_and_evaluate(config, workdir)` reads as: setup (config, mesh, data), restore (or
initialise), loop, finish. Params are replicated and the batch is sharded over one "data" axis
of every device on every host; each host feeds its own data shard.
"""

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import periodic_actions
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from wavlejepa import (
    checkpointing,
    config_validation,
    evaluators,
    model_sizes,
    pretrained,
    reporting,
    runtime,
    sigreg,
    stopping,
    summary,
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
    """Held-out metrics over config.dataset.eval_batches batches (each the mean of the batches'
    values: the ranks of `train_step.ranks` too, one per batch), then config.evals."""
    results = {}
    if eval_loader is not None:
        batches = itertools.islice(iter(eval_loader), config.dataset.eval_batches)
        per_batch = [jax.device_get(eval_fn(state, _global_batch(b, sharding))) for b in batches]
        if not per_batch:
            raise ValueError(f"Split {config.dataset.eval_split!r} gave no eval batch.")
        results = {k: float(np.mean([m[k] for m in per_batch])) for k in per_batch[0]}
        if len(per_batch) > 1:  # The spread the run's closing verdict is judged against.
            losses = [float(m["loss"]) for m in per_batch]
            results["loss_sem"] = float(np.std(losses, ddof=1) / np.sqrt(len(losses)))
    results.update(evaluators.run_all(state.params, config))
    return results


def _build_on_host_0(dataset_config: ml_collections.ConfigDict) -> None:
    """Host 0 builds the dataset if need be, then tells every host whether it could: a failed
    build stops every host with an error (host 0's own; on the other hosts one pointing at host
    0's log) instead of leaving them waiting for a dataset that will not come."""
    failure = None
    if jax.process_index() == 0:
        try:
            pipeline.ensure_built(dataset_config)
        except Exception as error:  # Re-raised below, once the other hosts know.
            failure = error
    failed = multihost_utils.broadcast_one_to_all(np.int32(failure is not None))
    if failure is not None:
        raise failure
    if failed:
        raise pipeline.DatasetError(
            f"Host 0 could not build dataset {dataset_config.name!r}; its log names the problem "
            "and the fix. Nothing was written."
        )


def _check_probes(config: ml_collections.ConfigDict) -> None:
    """Loads each probe's data of config.evals before training (FSDD's is cached for the
    evals): a probe whose data is missing, or whose labels would make its accuracy meaningless,
    is a DatasetError now instead of a crash at the first eval."""
    from wavlejepa.evaluators import linear_probe

    for task in config.evals:
        if task in linear_probe.TASKS:
            try:
                linear_probe.load_task_data(task, linear_probe.task_config(config, task))
            except (FileNotFoundError, ValueError) as e:
                raise pipeline.DatasetError(f"config.evals.{task}: {e}") from e


def _prepared_config(
    config: ml_collections.ConfigDict, workdir: epath.Path
) -> ml_collections.ConfigDict | None:
    """The size's numbers filled in, every mistake we can see raised before compute or a write
    to workdir (a workdir holding another model's run or one past total_steps, a dataset missing
    or without usable audio: DatasetError), the dataset built if need be (host 0), and then the
    config written to workdir/config.json (host 0). None, with nothing written, when workdir
    already holds step total_steps: the run is complete."""
    config = config_validation.resolved(
        config, num_devices=jax.device_count(), num_processes=jax.process_count()
    )
    checkpointing.check_run_record(workdir / reporting.CONFIG_FILE, config)
    if (warning := sigreg.short_sample_warning(config)) and jax.process_index() == 0:
        logging.warning(warning)
    if config.init_from:
        pretrained.check_encoder(config.init_from, config.model)
    done = max(checkpointing.finished_steps(workdir / checkpointing.LATEST_DIR), default=0)
    if done > config.total_steps:
        raise checkpointing.CheckpointError(
            f"{workdir} already holds step {done}, past total_steps={config.total_steps}: "
            f"nothing was written. Give total_steps above {done} to train that run further, or "
            "a new --workdir for a shorter run."
        )
    if done == config.total_steps:
        if jax.process_index() == 0:
            print(
                f"{workdir} already holds step {done} of total_steps={config.total_steps}: "
                "the run is complete, nothing to do (raise total_steps to train further).",
                flush=True,
            )
        return None
    if not config.debug_dummy_data:
        _build_on_host_0(config.dataset)
        pipeline.check_data(
            config.dataset,
            batch_size=config.batch_size // jax.process_count(),
            shard_count=jax.process_count(),
            with_eval=config.dataset.eval_batches > 0,
        )
    _check_probes(config)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / reporting.CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
        logging.info("Config written to %s", workdir / reporting.CONFIG_FILE)
    return config


def _loaders(config: ml_collections.ConfigDict) -> tuple[Iterator, grain.DataLoader | None]:
    """This host's train iterator and eval loader: batch_size / hosts crops per step (the
    dataset was built and checked by `_prepared_config`)."""
    host_batch = config.batch_size // jax.process_count()
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
    return train_iter, eval_loader


def _restored_or_new_state(
    config: ml_collections.ConfigDict,
    latest_mngr: ocp.CheckpointManager,
    train_iter: Iterator,
    replicated: NamedSharding,
) -> train_state.TrainState:
    """The latest finished checkpoint (params replicated; the data position restored into
    train_iter), else a new state from config.seed (its encoder config.init_from's, if set)."""
    create = functools.partial(train_state.create, config=config)
    rng = jax.random.PRNGKey(config.seed)
    abstract_state = jax.eval_shape(create, rng)  # Shapes, nothing allocated.
    num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    logging.info("Model %s: %.2f M params.", model_sizes.describe(config.model), num_params / 1e6)
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract_state
    )
    state = checkpointing.restore_latest(latest_mngr, target, train_iter, config)
    if state is None and config.init_from:
        encoder = pretrained.encoder_params(config.init_from, config.model)
        state = jax.jit(create, out_shardings=replicated)(rng, encoder_params=encoder)
        logging.info("Starting from the encoder of %s (new predictor and projector).",
                     config.init_from)  # fmt: skip
    elif state is None:
        state = jax.jit(create, out_shardings=replicated)(rng)  # One sharding for every leaf.
        logging.info("No checkpoint in %s: starting from scratch.", latest_mngr.directory)
    else:
        logging.info("Resuming from the checkpoint of step %d.", int(jax.device_get(state.step)))
    return state


@dataclasses.dataclass
class _Run:
    """What the loop uses: the compiled steps, the data, the managers and the reporting."""

    config: ml_collections.ConfigDict
    train_fn: Callable
    eval_fn: Callable
    train_iter: Iterator
    eval_loader: grain.DataLoader | None
    batch_sharding: NamedSharding
    latest_mngr: ocp.CheckpointManager
    best_mngr: ocp.CheckpointManager | None
    reporter: reporting.Reporter
    progress: periodic_actions.ReportProgress
    stop: stopping.Stopper

    def evaluate(self, step: int, state: train_state.TrainState) -> None:
        """Held-out loss and evaluators, reported; the best manager offered the params."""
        self.reporter.flush()  # Stop here rather than evaluate after a non-finite step.
        try:
            with self.progress.timed("eval"):
                results = held_out_metrics(
                    self.eval_fn, state, self.eval_loader, self.config, self.batch_sharding
                )
        except Exception:
            if not self.stop.requested:
                raise
            logging.warning("Skipping the eval of step %d: its data workers stopped too.", step)
            return
        if results:
            self.reporter.write_eval(step, results)
        if self.best_mngr is not None and "loss" in results and step > 0:
            checkpointing.save_best(
                self.best_mngr, step, state.params, self.config, results["loss"]
            )

    def save(self, step: int, state: train_state.TrainState) -> None:
        self.reporter.flush()  # Never save the params of a non-finite step.
        with self.progress.timed("checkpoint"):
            checkpointing.save_latest(self.latest_mngr, step, state, self.train_iter, self.config)

    def hooks(self, workdir: epath.Path) -> list:
        """Called after every step: progress, and the profiler when config.profile asks."""
        hooks = [self.progress]
        profile = self.config.profile
        if profile.enabled and jax.process_index() == 0:
            hooks.append(
                periodic_actions.Profile(
                    logdir=workdir,
                    first_profile=profile.first_step,
                    num_profile_steps=profile.num_steps,
                    profile_duration_ms=None,
                    every_secs=None,
                )
            )
        return hooks

    def loop(
        self, state: train_state.TrainState, start_step: int, workdir: epath.Path
    ) -> train_state.TrainState:
        """Steps until total_steps or a stop; `step` counts updates done, and its metrics are
        read after the next step is dispatched."""
        config = self.config
        every = dict(on_steps=[config.total_steps])
        eval_action = periodic_actions.PeriodicCallback(
            every_steps=config.eval_every_steps,
            callback_fn=lambda step, t, state: self.evaluate(step, state),
            **every,
        )
        checkpoint_action = periodic_actions.PeriodicCallback(
            every_steps=config.checkpoint_every_steps,
            callback_fn=lambda step, t, state: self.save(step, state),
            **every,
        )
        hooks = self.hooks(workdir)
        if start_step == 0 and config.eval_before_training:
            self.evaluate(0, state)  # The untrained model's figures: the baseline of this run.
        logging.info("Training steps %d..%d.", start_step + 1, config.total_steps)
        with self.stop:
            for step in range(start_step + 1, config.total_steps + 1):
                try:
                    host_batch = next(self.train_iter)
                except Exception:
                    if not self.stop.excuses():
                        raise
                    # Ctrl-C or a SIGTERM sent to the whole process group ended grain's worker
                    # processes too: save the last step taken (the data position is still known).
                    logging.warning("The data workers stopped too; saving step %d.", step - 1)
                    if self.latest_mngr.latest_step() != step - 1:
                        self.save(step - 1, state)
                    break
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    batch = _global_batch(host_batch, self.batch_sharding)
                    state, metrics = self.train_fn(state, batch)
                self.reporter.train_step(step, metrics)
                for hook in hooks:
                    hook(step)
                eval_action(step, state=state)
                saved = checkpoint_action(step, state=state)
                if self.stop.should_stop(step):
                    if not saved:
                        self.save(step, state)
                    logging.warning("Stopped at step %d; its checkpoint is saved.", step)
                    break
            self.reporter.flush()
        return state


def _step_fns(config: ml_collections.ConfigDict, replicated, batch_sharding) -> dict:
    """The jitted `train_fn` and `eval_fn`: the state replicated (every leaf), the batch sharded
    over "data"; the train step donates the old state."""
    return {
        "train_fn": jax.jit(
            functools.partial(train_step.train_step, config=config),
            in_shardings=(replicated, batch_sharding),
            out_shardings=(replicated, replicated),
            donate_argnums=0,
        ),
        "eval_fn": jax.jit(
            functools.partial(train_step.eval_step, config=config),
            in_shardings=(replicated, batch_sharding),
            out_shardings=replicated,
        ),
    }


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str
) -> train_state.TrainState | None:
    """Trains (resuming from the latest checkpoint in workdir) and returns the final state;
    None, with nothing written, when workdir already holds step total_steps."""
    # Setup: config, mesh, data. One "data" mesh axis over every device of every host (in the
    # interconnect's order); Auto axes propagate shardings through unannotated model code.
    workdir = epath.Path(workdir)
    config = _prepared_config(config, workdir)
    if config is None:
        return None
    runtime.quiet_orbax_logs()
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    logging.info(
        "%d devices on %d hosts; this is host %d.",
        jax.device_count(),
        jax.process_count(),
        jax.process_index(),
    )
    train_iter, eval_loader = _loaders(config)

    # Restore the latest finished checkpoint (and the data position), else initialise.
    latest_mngr = checkpointing.latest_manager(workdir, config)
    best_mngr = checkpointing.best_manager(workdir, config) if config.keep_best else None
    state = _restored_or_new_state(config, latest_mngr, train_iter, replicated)
    start_step = int(jax.device_get(state.step))
    run = _Run(
        config=config,
        **_step_fns(config, replicated, batch_sharding),
        train_iter=train_iter,
        eval_loader=eval_loader,
        batch_sharding=batch_sharding,
        latest_mngr=latest_mngr,
        best_mngr=best_mngr,
        reporter=reporting.Reporter(workdir, config, start_step=start_step),
        progress=periodic_actions.ReportProgress(
            num_train_steps=config.total_steps, every_steps=config.log_every_steps
        ),
        stop=stopping.Stopper(),
    )

    # Loop, then finish: whatever happened, what was saved is finished on disk before we
    # return or raise.
    try:
        state = run.loop(state, start_step, workdir)
    finally:
        latest_mngr.wait_until_finished()
        if best_mngr is not None:
            best_mngr.wait_until_finished()
        run.reporter.close()
    if jax.process_index() == 0:
        print("\n".join(summary.lines(workdir, config.dataset.audio_dir or None)), flush=True)
    return state
