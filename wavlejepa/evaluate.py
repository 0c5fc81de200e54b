r"""Runs the probe evaluations standalone: on a checkpoint, or on a baseline through the same probe.

  python -m wavlejepa.evaluate --checkpoint=/tmp/wj/run --eval=fsdd_digits,fsdd_speakers
  python -m wavlejepa.evaluate --baseline=logmel --eval=fsdd_digits
  python -m wavlejepa.evaluate --baseline=random_init --config=configs/cpu_debug.py --seed=0 \
      --eval=fsdd_digits --data=full
  python -m wavlejepa.evaluate --checkpoint=/tmp/wj/run --eval=labels --data=my_audio \
      --data_dir=~/tensorflow_datasets   # any dataset prepared with --label_from

Prints a table, one row per evaluation as it finishes: test, validation and train accuracy of the
probe (the weight decay picked on validation), the number of test clips (what the accuracy's noise
depends on), the pooling and the data; the model is named above it. For programs, --json prints one
JSON line per evaluation instead (all of a row's fields, and the model's); --output also writes
them, as one JSON list, to a file. The knobs of each probe come from the checkpoint's (or
--config's) `config.evals.<name>` when set, else the defaults in `evaluators/linear_probe.py`;
--data and --pooling override them.
"""

import json
import os
import sys

import ml_collections
import tqdm
from absl import app, flags
from ml_collections import config_flags

from wavlejepa import cli, flag_kinds, runtime

# JAX, the model and the probes are imported in main(): `--help` and flag errors are instant.
BASELINES = ("none", "random_init", "logmel")
# linear_probe.TASKS's names (it imports JAX; tested equal).
TASKS = ("fsdd_digits", "fsdd_speakers", "labels")


def _define_flags() -> None:
    """CLI flags, defined only when run as a program."""
    flag_kinds.define_input("checkpoint", None, "Workdir or checkpoint directory.", kind="folder")
    config_flags.DEFINE_config_file(
        "config", None, "Run config (for --baseline=random_init without --checkpoint).",
        lock_config=True,
    )  # fmt: skip
    flag_kinds.define_choices(
        "eval", ["fsdd_digits"], "Probe tasks, e.g. fsdd_digits,fsdd_speakers.", choices=TASKS
    )
    flags.DEFINE_enum("baseline", "none", BASELINES, "Evaluate a baseline instead.")
    flag_kinds.define_number(
        "seed", 0, "Params seed of --baseline=random_init.", low=0, high=2**31 - 1
    )
    flag_kinds.define_text(
        "data", None,
        "Probe data: sample (bundled) or a folder of FSDD recordings; for --eval=labels, a "
        "prepared dataset's name.",
        pattern=r"\S+", what="'sample', a folder or a dataset name", example="sample",
    )  # fmt: skip
    flag_kinds.define_input(
        "data_dir", None, "--eval=labels: the TFDS data_dir of --data.", kind="folder"
    )
    flags.DEFINE_enum("pooling", None, ["mean", "mean_std"], "Clip pooling override.")
    flag_kinds.define_output(
        "output", None, "Also write the results (a JSON list) here.", kind="file"
    )
    flags.DEFINE_bool("json", False, "Print one JSON line per evaluation instead of the table.")


# The table's columns after the eval's name: (heading, record key, format of the value).
_COLUMNS = (
    ("test acc", "test_accuracy", "{:.3f}"),
    ("val acc", "validation_accuracy", "{:.3f}"),
    ("train acc", "train_accuracy", "{:.3f}"),
    ("test clips", "test_examples", "{:d}"),
    ("weight decay", "weight_decay", "{:g}"),
)


def table_header(record: dict, eval_width: int) -> str:
    """The lines above the table's rows: the model (its size and seed when known), the headings."""
    about = ", ".join(f"{k} {record[k]}" for k in ("size", "seed") if record.get(k) is not None)
    model = f"model: {record['model']}" + (f" ({about})" if about else "")
    headings = "  ".join(heading for heading, _, _ in _COLUMNS)
    return f"{model}\n{'eval':<{eval_width}}  {headings}  {'pooling':<8}  data"


def table_row(record: dict, eval_width: int) -> str:
    """One evaluation's row, each value right-aligned under its heading."""
    cells = "  ".join(f"{fmt.format(record[k]):>{len(heading)}}" for heading, k, fmt in _COLUMNS)
    return f"{record['eval']:<{eval_width}}  {cells}  {record['pooling']:<8}  {record['data']}"


def _probe_config(config, task: str, args) -> ml_collections.ConfigDict:
    """The probe's knobs: config.evals.<task> (or the defaults), then --data, --pooling and
    --data_dir."""
    from wavlejepa.evaluators import linear_probe

    probe_cfg = linear_probe.task_config(config, task) if config else linear_probe.default_config()
    if args.data:
        probe_cfg.data = args.data
    if args.pooling:
        probe_cfg.pooling = args.pooling
    if args.data_dir is not None:
        probe_cfg.data_dir = args.data_dir
    return probe_cfg


def _frames_factory(args):
    """(batch_size -> FramesFn, the run config or None) of the model or baseline asked for."""
    from wavlejepa import checkpointing, embedding, logmel, model_sizes, pretrained

    config = args.config
    if config is not None:  # `--config.model.size` picks the size table's row, as in training.
        config = ml_collections.ConfigDict(config.to_dict())
        try:
            config.model = model_sizes.resolve(config.model)
        except ValueError as e:
            cli.fail(str(e))
    if args.baseline == "logmel":
        return (lambda batch_size: logmel.logmel_frames), config
    if args.checkpoint:
        try:
            params, config = pretrained.load(args.checkpoint)
        except checkpointing.CheckpointError as e:
            cli.fail(str(e))
    elif args.baseline != "random_init" or config is None:
        cli.fail("give --checkpoint, --baseline=logmel, or --baseline=random_init with --config.")

    def factory(batch_size: int):
        if args.baseline == "random_init":
            embedder = embedding.Embedder.random_init(config, seed=args.seed, batch_size=batch_size)
        else:
            embedder = embedding.Embedder.from_config(params, config, batch_size=batch_size)

        def frames(clips):
            with tqdm.tqdm(unit="window", desc="embedding", file=sys.stderr, leave=False) as bar:
                return [e.frames for e in embedder.embed(clips, progress=bar)]

        return frames

    return factory, config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runtime.set_up()
    from wavlejepa.data import fsdd
    from wavlejepa.evaluators import linear_probe

    args = flags.FLAGS
    if args.checkpoint and args.baseline != "none":
        cli.fail(
            f"--checkpoint and --baseline={args.baseline} contradict each other: give one "
            "(a baseline is evaluated instead of a checkpoint)."
        )
    output = os.path.abspath(args.output) if args.output else None  # Checked by its kind.
    if args.data is not None and any(linear_probe.TASKS[t] != "label" for t in args.eval):
        try:
            fsdd.fsdd_dir(args.data)
        except FileNotFoundError as e:
            cli.fail(str(e))
    frames_factory, config = _frames_factory(args)
    results, features = [], {}  # features: shared by tasks probing the same clips the same way.
    eval_width = max(len("eval"), *(len(t) for t in args.eval))
    for task in args.eval:
        probe_cfg = _probe_config(config, task, args)
        try:
            data, data_dir = linear_probe.load_task_data(task, probe_cfg)
        except (FileNotFoundError, ValueError) as e:  # No FSDD files; an unprepared dataset.
            cli.fail(str(e))
        key = (data_dir, probe_cfg.pooling, probe_cfg.batch_size)
        if key not in features:
            frames_fn = frames_factory(probe_cfg.batch_size)
            features[key] = linear_probe.clip_features(frames_fn, data, probe_cfg.pooling)
        metrics = linear_probe.score(features[key], data, task, probe_cfg)
        record = dict(
            eval=task,
            model=args.baseline if args.baseline != "none" else args.checkpoint,
            seed=args.seed if args.baseline == "random_init" else None,
            size=config.model.size if config and args.baseline != "logmel" else None,
            data=data_dir,
            pooling=probe_cfg.pooling,
            **metrics,
        )
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            if not results:
                print(table_header(record, eval_width))
            print(table_row(record, eval_width), flush=True)
        results.append(record)
    if output:
        cli.write_atomically(output, lambda f: f.write(json.dumps(results, indent=1).encode()))


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
