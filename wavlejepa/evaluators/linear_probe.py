"""Linear probe of frozen clip embeddings on FSDD: spoken digit (10 classes) and speaker (5).

A softmax classifier on standardised clip embeddings (the mean of the frames, or mean and std) is
fit with full-batch L-BFGS for each weight decay of a small grid on the train split; the decay
with the best validation accuracy is kept and its test accuracy reported. Turned on per task:

  config.evals.fsdd_digits = ml_collections.ConfigDict(dict(data="sample", pooling="mean"))

(any key of `default_config()` may be set), or standalone with `python -m wavlejepa.evaluate`.
Clips are read from `{digit}_{speaker}_{take}.wav` (labels from the names): the 300-clip sample in
the package ("sample"), or any folder of such files (e.g. the full FSDD's `recordings/`).
"""

import functools
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from wavlejepa import embedding, evaluators
from wavlejepa.data import fsdd
from wavlejepa.data.fsdd import SPLITS

# evaluator name -> the label it predicts. "labels": the "label" feature of any prepared dataset
# (an AudioFolder built with --label_from), named by `data` and `data_dir`.
TASKS = {"fsdd_digits": "digit", "fsdd_speakers": "speaker", "labels": "label"}
FramesFn = Callable[[list[np.ndarray]], list[np.ndarray]]  # 16 kHz clips -> [frames, dim] each


def default_config() -> ml_collections.ConfigDict:
    """Knobs of one probe task (`config.evals.<task>` overrides any of them)."""
    cfg = ml_collections.ConfigDict()
    cfg.data = "sample"  # "sample" (the 300 clips in the package) or a folder of FSDD recordings;
    # for the "labels" task, the name of a prepared dataset with a "label" feature.
    cfg.data_dir = ""  # "labels" task: the TFDS data_dir of that dataset ("" = TFDS default).
    cfg.pooling = "mean"  # Clip embedding: "mean" of frames or "mean_std" (both, concatenated).
    cfg.weight_decays = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # L2 grid, picked on validation.
    cfg.steps = 200  # Full-batch L-BFGS iterations (the problem is convex and small).
    cfg.batch_size = 16  # Windows per jitted embedding call.
    return cfg


def load_task_data(task: str, probe_cfg: ml_collections.ConfigDict) -> tuple[dict, str]:
    """(data, where it came from) of a probe task: FSDD for fsdd_*, a prepared dataset for
    "labels". Raises FileNotFoundError or ValueError with a message naming the fix, also for
    splits whose labels make the probe's accuracy meaningless (`check_labels`)."""
    data, where = _load_task_data(task, probe_cfg)
    check_labels(task, data, where)
    return data, where


def check_labels(task: str, data: dict, where: str) -> None:
    """Raises ValueError when the task's splits cannot give a meaningful accuracy: a split
    without a clip, one class in train, or no test clip of a class seen in train; logs one
    warning line when some test clips' classes are not in train, or test holds one class."""
    label = TASKS[task]
    names, y = data["classes"][label], {s: np.asarray(data[s][label]) for s in SPLITS}
    if label == "label":
        splits_fix = f"prepare {where!r} again under another name with larger split fractions"
        classes_fix = f"prepare {where!r} again under another name, each clip labelled by its class"
        unseen_fix = f"give each class more clips (some for train, some for test), or {splits_fix}"
    else:  # FSDD: labels from the file names, splits from the takes.
        splits_fix = (
            "FSDD splits by take (0-4 test, 5-9 validation, 10 on train; with fewer than 10 "
            "takes 0-1, 2, 3 on): give recordings of each split's takes, or --data=sample"
        )
        classes_fix = f"give recordings of two or more {label}s, or --data=sample"
        unseen_fix = splits_fix
    empty = [s for s in SPLITS if not len(y[s])]
    if empty:
        raise ValueError(
            f"The {task!r} probe on {where} has no clip in its {empty} split: {splits_fix}."
        )
    seen = set(y["train"].tolist())
    if len(seen) < 2:
        raise ValueError(
            f"The {task!r} probe on {where}: every train clip is of one {label} "
            f"({names[y['train'][0]]!r}), so there is nothing to tell apart: {classes_fix}."
        )
    unseen = ~np.isin(y["test"], list(seen))
    unseen_names = sorted({names[i] for i in y["test"][unseen]})
    if unseen.all():
        raise ValueError(
            f"The {task!r} probe on {where}: none of the test split's {len(unseen_names)} "
            f"{label}s (e.g. {unseen_names[0]!r}) is among the train split's {len(seen)}, so its "
            f"accuracy is 0 whatever the embeddings: {unseen_fix}."
        )
    if unseen.any():
        logging.warning(
            "The %r probe on %s: %d of the %d test clips are of %ss never in train (%s); they "
            "count as errors whatever the embeddings.",
            task, where, unseen.sum(), len(unseen), label, ", ".join(unseen_names),
        )  # fmt: skip
    elif len(set(y["test"].tolist())) == 1:
        logging.warning(
            "The %r probe on %s: every test clip is of one %s (%r); its accuracy is that "
            "class's recall alone.",
            task, where, label, names[y["test"][0]],
        )  # fmt: skip


def _load_task_data(task: str, probe_cfg: ml_collections.ConfigDict) -> tuple[dict, str]:
    if TASKS[task] == "label":
        if probe_cfg.data == "sample":
            raise ValueError(
                f"The {task!r} probe needs a prepared dataset with labels: give its name as data "
                "(evaluate: --data=NAME --data_dir=DIR; prepare it with `python -m "
                "wavlejepa.prepare_dataset --audio_dir=DIR --data_dir=DIR --name=NAME "
                "--label_from=folder` (or csv))."
            )
        from wavlejepa.data import labelled  # TFDS: only for this task.

        _check_labelled(probe_cfg.data, probe_cfg.data_dir)
        return labelled.load_labelled(probe_cfg.data, probe_cfg.data_dir), probe_cfg.data
    directory = fsdd.fsdd_dir(probe_cfg.data)
    return fsdd.load_fsdd(directory), directory


def _check_labelled(name: str, data_dir: str) -> None:
    """Raises ValueError with the command that builds a labelled copy when prepared dataset
    `name` was built without --label_from (checked in its metadata, before reading any audio)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=os.path.expanduser(data_dir) or None)
    except tfds.core.registered.DatasetNotFoundError:
        return  # Reading it says how to prepare it.
    metadata = dict(builder.info.metadata or {})
    if metadata.get("options", {}).get("label_from") != "none":
        return
    where = data_dir or "~/tensorflow_datasets"
    raise ValueError(
        f"Dataset {name!r} was prepared without labels, so there is nothing to predict: build a "
        f"labelled copy with `python -m wavlejepa.prepare_dataset "
        f"--audio_dir={metadata.get('audio_dir', 'DIR')} --data_dir={where} "
        f"--name={name}_labelled --label_from=folder` (or --label_from=csv "
        f"--label_csv=FILE) and probe that (--data={name}_labelled)."
    )


def pool(frames_TxD: np.ndarray, pooling: str) -> np.ndarray:
    """Frames [frames, dim] -> clip embedding [dim] ("mean") or [2 * dim] ("mean_std")."""
    frames = np.asarray(frames_TxD, np.float64)
    if pooling == "mean":
        return frames.mean(axis=0)
    if pooling == "mean_std":
        return np.concatenate([frames.mean(axis=0), frames.std(axis=0)])
    raise ValueError(f"pooling={pooling!r}; choose 'mean' or 'mean_std'.")


def softmax_loss(params: dict, x_NxD: jax.Array, y_N: jax.Array, weight_decay) -> jax.Array:
    """Mean cross-entropy + weight_decay / 2 * ||W||^2 (the bias is not decayed)."""
    logits_NxC = x_NxD @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_NxC, y_N).mean()
    return ce + 0.5 * weight_decay * jnp.sum(jnp.square(params["w"]))


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def fit_softmax(x_NxD, y_N, weight_decays_W, *, num_classes: int, steps: int) -> dict:
    """One softmax classifier per weight decay, each by `steps` L-BFGS iterations from zero.

    Returns {"w": [W, dim, classes], "b": [W, classes]}.
    """

    def fit_one(weight_decay):
        loss = functools.partial(softmax_loss, x_NxD=x_NxD, y_N=y_N, weight_decay=weight_decay)
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def step(carry, _):
            params, state = carry
            value, grad = value_and_grad(params, state=state)
            updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
            return (optax.apply_updates(params, updates), state), None

        params = {
            "w": jnp.zeros((x_NxD.shape[1], num_classes), jnp.float32),
            "b": jnp.zeros((num_classes,), jnp.float32),
        }
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), length=steps)
        return params

    return jax.vmap(fit_one)(weight_decays_W)


def fit_and_score(
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    num_classes: int,
    weight_decays,
    steps: int,
) -> dict[str, float]:
    """Standardises with train statistics, fits the grid, picks by validation accuracy.

    Args:
      features: {split: [n, dim]} for "train", "validation", "test".
      labels: {split: int [n]}.
    Returns:
      test/validation/train accuracy of the chosen classifier, its weight decay, and the
      number of test examples.
    """
    mean = features["train"].mean(axis=0)
    std = features["train"].std(axis=0) + 1e-8
    x = {s: ((np.asarray(features[s], np.float64) - mean) / std).astype(np.float32) for s in SPLITS}
    decays = sorted(float(d) for d in weight_decays)
    params = fit_softmax(x["train"], labels["train"], np.asarray(decays, np.float32),
                         num_classes=num_classes, steps=steps)  # fmt: skip
    w, b = np.asarray(params["w"]), np.asarray(params["b"])
    accuracy = {
        s: np.mean(np.argmax(np.einsum("nd,wdc->wnc", x[s], w) + b[:, None], -1) == labels[s], -1)
        for s in SPLITS
    }  # {split: [W]}
    best = int(np.argmax(accuracy["validation"]))  # The first best: the smallest decay.
    result = {f"{s}_accuracy": float(accuracy[s][best]) for s in ("test", "validation", "train")}
    result["weight_decay"] = decays[best]
    result["test_examples"] = len(labels["test"])  # What the accuracy's noise depends on.
    return result


def clip_features(frames_fn: FramesFn, data: dict, pooling: str) -> dict[str, np.ndarray]:
    """{split: [clips, dim]}: every clip of `load_task_data` data embedded and pooled."""
    return {s: np.stack([pool(f, pooling) for f in frames_fn(data[s]["audio"])]) for s in SPLITS}


def score(features: dict, data: dict, task: str, probe_cfg: ml_collections.ConfigDict) -> dict:
    """The probe of `task` on `clip_features` of `load_task_data` data."""
    label = TASKS[task]
    labels = {s: data[s][label] for s in SPLITS}
    num_classes = len(data["classes"][label])
    return fit_and_score(features, labels, num_classes, probe_cfg.weight_decays, probe_cfg.steps)


def heldout_speaker_splits(
    features: dict[str, np.ndarray], data: dict, speaker: str, label: str = "digit"
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Splits of a probe tested on a speaker it never saw: (features, labels), each {split: ...}.

    train and validation: the other speakers' train and validation clips; test: every clip of
    `speaker`, whatever its split (500 in the full FSDD).

    Args:
      features: {split: [clips, dim]} of `load_fsdd` data (e.g. `clip_features`).
      data: that `load_fsdd` data (its speaker ids and labels).
      speaker: a name in data["speakers"].
      label: "digit" or "speaker" (the label of the returned splits).
    """
    if speaker not in data["speakers"]:
        raise ValueError(f"Unknown speaker {speaker!r}; FSDD has {data['speakers']}.")
    sid = data["speakers"].index(speaker)
    out_x, out_y = {}, {}
    for split in ("train", "validation"):
        keep = data[split]["speaker"] != sid
        out_x[split], out_y[split] = features[split][keep], data[split][label][keep]
    out_x["test"] = np.concatenate([features[s][data[s]["speaker"] == sid] for s in SPLITS])
    out_y["test"] = np.concatenate([data[s][label][data[s]["speaker"] == sid] for s in SPLITS])
    return out_x, out_y


def score_heldout_speaker(
    features: dict, data: dict, speaker: str, probe_cfg: ml_collections.ConfigDict
) -> dict:
    """The digit probe trained on the other speakers and tested on `speaker` (see above)."""
    x, y = heldout_speaker_splits(features, data, speaker)
    return fit_and_score(x, y, 10, probe_cfg.weight_decays, probe_cfg.steps)


def probe(frames_fn: FramesFn, task: str, probe_cfg: ml_collections.ConfigDict) -> dict:
    """Embeds every clip of the task's data with `frames_fn`, pools, and fits/scores the probe."""
    data, _ = load_task_data(task, probe_cfg)
    return score(clip_features(frames_fn, data, probe_cfg.pooling), data, task, probe_cfg)


def model_frames(params: dict, config: ml_collections.ConfigDict, batch_size: int) -> FramesFn:
    """The model's frame embeddings of each clip (windows of the training crop length)."""
    embedder = embedding.Embedder.from_config(params, config, batch_size=batch_size)
    return lambda clips: [e.frames for e in embedder.embed(clips)]


def task_config(config: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
    """default_config() updated with config.evals.<task> (when the config has it).

    Raises:
      KeyError: config.evals.<task> sets a key default_config() does not have (a typo).
    """
    probe_cfg = default_config()
    probe_cfg.lock()  # Unknown keys fail instead of being silently ignored.
    if "evals" in config and task in config.evals:
        probe_cfg.update(config.evals[task])
    return probe_cfg


def _evaluator(task: str) -> evaluators.Evaluator:
    def evaluate(params: dict, config: ml_collections.ConfigDict) -> dict[str, float]:
        probe_cfg = task_config(config, task)
        return probe(model_frames(params, config, probe_cfg.batch_size), task, probe_cfg)

    evaluate.__name__ = evaluate.__qualname__ = f"evaluate_{task}"
    return evaluate


for _task in TASKS:
    evaluators.register(_task)(_evaluator(_task))
