r"""How hard SIGReg pushes against the prediction as the batch grows, with and without the
scale rule (losses.py: SIGReg tests a fixed sample of loss.sigreg_crops x loss.sigreg_frames
rows a step).

  python -m research.sigreg_scale --config=configs/quickstart.py \
      --fsdd_dir=../shared/data/fsdd/recordings --checkpoint=<a 100-step run of research.learning> \
      --json=research/results/sigreg_scale.json

For each shape (model size : crops x crop seconds) and each set of params (the config's random
init; with --checkpoint also a trained run's params, for the small model), one batch of real
FSDD crops from the training pipeline gives the ratio

    ||g_sigreg|| / ||g_invariance||

on the encoder's weights (conv front end and transformer: what users take), g_sigreg the
gradient of the loss's SIGReg terms (lambda * SIGReg + the clip weight * its statistic) and
g_invariance that of (1 - lambda) * invariance, both from `losses.weighted_terms` with the same
masks and slices. "rule" is the recipe (a 32 x 50 sample); "all rows" sets the sample to the
whole batch (N = crops x frames), the form before the rule. With the rule the ratio should stay
about level as N grows; without it, it grows with N.

The batch is run in chunks of --chunk crops so that 512 crops of 2.01 s fit on a CPU: a forward
pass of every chunk gives the outputs the loss reads; the loss's cotangents on them are taken on
the whole batch (SIGReg's centring and statistic couple the crops); a VJP of each chunk's forward
pass then sums each term's gradient over the chunks.
"""

import functools
import os
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import common
from research import learning  # noqa: F401 (its flags)
from wavlejepa import losses, masking, model, model_sizes, pretrained, runtime, train_state
from wavlejepa.data import pipeline, transforms
from wavlejepa.nets import waveform

_DATA_DIR = flags.DEFINE_string(
    "data_dir", "/tmp/wavlejepa_sigreg_scale", "TFDS data_dir the FSDD dataset is built in."
)
_SHAPES = flags.DEFINE_list(
    "shapes",
    "small:32x0.51,small:32x2.01,small:128x2.01,small:512x2.01,base:32x0.51,base:32x2.01",
    "model size : crops x crop seconds, each measured in turn.",
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "", "A trained small-model run (workdir): its params are measured too."
)
_PARAMS = flags.DEFINE_list(
    "params", ["init", "trained"], "Which params to measure: init, trained (with --checkpoint)."
)
_CHUNK = flags.DEFINE_integer("chunk", 32, "Crops per forward/backward chunk.")
FLAGS = flags.FLAGS
# --config, --fsdd_dir and --json are research.learning's flags, defined when it is imported (one
# process, a test session, may import every research tool).

FLOAT_OUTPUTS = ("projected_frames", "predictions", "targets")  # What the gradients flow from.
ENCODER = ("waveform_encoder", "context_encoder")
TEMPLATE = (
    "{size:5s} {crops:4d} x {seconds:4.2f} s {rows_all:7d} {params:8s} {rows_rule:5d}"
    " {ratio_rule:9.3f} {ratio_all:9.3f} {inv_norm:9.3g} {seconds_taken:6.0f}"
)
HEADER = "model crops x crop      N  params   N rule ratio rule ratio all  |g_inv|    time"


def _config_for(base_config, size: str, crops: int, seconds: float):
    config = base_config.copy_and_resolve_references()
    if config.model.size != size:
        config.model = model_sizes.model_config(size)
    config.batch_size = crops
    config.dataset.crop_seconds = seconds
    config.dataset.data_dir = _DATA_DIR.value
    config.dataset.audio_dir = FLAGS.fsdd_dir
    config.dataset.num_workers = 0
    return config


def first_batch(config) -> dict:
    """One training batch of the config's pipeline: {"audio", "lengths", "clip_starts"}."""
    pipeline.ensure_built(config.dataset)
    loader = pipeline.create_train_loader(
        config.dataset, batch_size=config.batch_size, seed=config.seed, shard_index=0,
        shard_count=1,
    )  # fmt: skip
    return {k: jnp.asarray(v) for k, v in next(iter(loader)).items()}


def _rows(tree, crops: slice):
    """Every array of `tree` at the crops `crops` (its leading axis)."""
    return jax.tree.map(lambda x: x[crops], tree)


def _split(out: dict) -> tuple[dict, dict]:
    floats = {k: v for k, v in out.items() if k in FLOAT_OUTPUTS}
    return floats, {k: v for k, v in out.items() if k not in FLOAT_OUTPUTS}


def term_gradients(params, batch, key, configs: dict, chunk: int) -> dict:
    """`{"invariance": grads, name: grads of the SIGReg terms under configs[name]}`: each the
    gradient on `params` of the loss's terms for one batch, summed over chunks of crops. The
    configs differ only in their SIGReg sample; the masks and slices come from `key` as in
    `losses.objective`."""
    config = next(iter(configs.values()))
    audio, lengths = batch["audio"], batch["lengths"]
    crops, num_samples = audio.shape
    k_masks, k_slices = jax.random.split(key)
    masks = masking.sample(
        k_masks, config.masking, crops, waveform.num_frames(num_samples, config.model)
    )
    chunks = [slice(i, min(i + chunk, crops)) for i in range(0, crops, chunk)]
    sliced = lambda s: (audio[s], _rows(masks, s), lengths[s])

    def forward(p, a, m, n):
        return model.forward(p, a, m, config.model, lengths_B=n)

    outs = [jax.jit(forward)(params, *sliced(s)) for s in chunks]
    floats, fixed = _split(jax.tree.map(lambda *x: jnp.concatenate(x), *outs))

    def cotangent(cfg, names):
        def part(f):
            terms, _ = losses.weighted_terms({**fixed, **f}, k_slices, cfg, batch["clip_starts"])
            return sum(terms[n] for n in names if n in terms)

        return jax.jit(jax.grad(part))(floats)

    sigreg_names = ("sigreg", "sigreg_within_clips")
    cotangents = {"invariance": cotangent(config, ("invariance",))}
    cotangents.update({name: cotangent(cfg, sigreg_names) for name, cfg in configs.items()})

    @jax.jit
    def chunk_grads(p, a, m, n, cots):
        _, vjp = jax.vjp(lambda q: _split(forward(q, a, m, n))[0], p)
        return {name: vjp(cot)[0] for name, cot in cots.items()}

    total = None
    for s in chunks:
        grads = chunk_grads(params, *sliced(s), _rows(cotangents, s))
        total = grads if total is None else jax.tree.map(jnp.add, total, grads)
    return total


def encoder_norm(grads: dict) -> float:
    """The gradient's L2 norm over the encoder's weights (front end and transformer)."""
    leaves = jax.tree.leaves({k: grads[k] for k in ENCODER})
    return float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves)))


def measure(config, params, batch, label: str, chunk: int) -> dict:
    """One row: both ratios for `params` on `batch`."""
    crops, frames = (
        batch["audio"].shape[0],
        int(waveform.num_frames(batch["audio"].shape[1], config.model)),
    )
    everything = config.copy_and_resolve_references()
    everything.loss.sigreg_crops, everything.loss.sigreg_frames = crops, frames
    start = time.perf_counter()
    grads = term_gradients(
        params, batch, jax.random.PRNGKey(config.seed), {"rule": config, "all": everything}, chunk
    )
    inv = encoder_norm(grads["invariance"])
    return {
        "size": config.model.size,
        "crops": crops,
        "seconds": config.dataset.crop_seconds,
        "frames": frames,
        "rows_all": crops * frames,
        "rows_rule": min(crops, config.loss.sigreg_crops) * min(frames, config.loss.sigreg_frames),
        "params": label,
        "inv_norm": inv,
        "sigreg_norm_rule": encoder_norm(grads["rule"]),
        "sigreg_norm_all": encoder_norm(grads["all"]),
        "ratio_rule": encoder_norm(grads["rule"]) / inv,
        "ratio_all": encoder_norm(grads["all"]) / inv,
        "seconds_taken": time.perf_counter() - start,
    }


def param_sets(config) -> list[tuple[str, dict]]:
    """[("init", the config's initial params), ("trained", --checkpoint's) for the small model]."""
    create = functools.partial(train_state.create, config=config)
    sets = []
    if "init" in _PARAMS.value:
        sets.append(("init", jax.jit(create)(jax.random.PRNGKey(config.seed)).params))
    if "trained" in _PARAMS.value and _CHECKPOINT.value and config.model.size == "small":
        trained, trained_config = pretrained.load(_CHECKPOINT.value)
        if trained_config.model.size != "small":
            raise app.UsageError(f"--checkpoint={_CHECKPOINT.value} is not a small-model run.")
        sets.append(("trained", trained))
    return sets


def _settings() -> dict:
    return {
        "config": FLAGS.config.to_dict(),
        "shapes": _SHAPES.value,
        "checkpoint": _CHECKPOINT.value,
        "params": _PARAMS.value,
        "chunk": _CHUNK.value,
    }


def main(argv):
    runtime.set_up()
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.fsdd_dir or not os.path.isdir(FLAGS.fsdd_dir):
        raise app.UsageError(f"--fsdd_dir={FLAGS.fsdd_dir!r} is not a folder of FSDD .wav files.")
    rows = []
    print(HEADER, flush=True)
    for shape in _SHAPES.value:
        size, crops_by_seconds = shape.split(":")
        crops, seconds = crops_by_seconds.split("x")
        config = _config_for(FLAGS.config, size, int(crops), float(seconds))
        transforms.crop_samples(config.dataset)  # A bad crop length fails here.
        batch = first_batch(config)
        for label, params in param_sets(config):
            rows.append(measure(config, params, batch, label, _CHUNK.value))
            common.print_row(TEMPLATE, rows[-1])
            common.write_json(FLAGS.json, {"settings": _settings(), "rows": rows})


if __name__ == "__main__":
    app.run(main)
