r"""Where a train step's time goes: each component's forward + backward, timed alone.

  python -m benchmarks.step_parts --config=configs/quickstart.py --repeats=5
  python -m benchmarks.step_parts --config=configs/default.py --config.batch_size=8 --repeats=2

Each part is jitted alone as `value_and_grad` of a random linear read-out of its output, with
respect to its params and (where an earlier part feeds it) its input, on the shapes a step of
the config sees: the conv front end on the crops, the encoder on all frames, the encoder on the
gathered context (capacity frames), the predictor over every target group, the projector over
every frame and prediction, and SIGReg over the frames. The whole `train_step` is timed last, so
the parts can be read as shares of it (they sum to about the step; the rest is the optimizer,
gathers and masks). Prints seconds per call, the share of the sum of parts, and the analytic
forward + backward GFLOP of `wavlejepa/flops.py` with the GFLOP/s each part reaches.
"""

import functools

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from wavlejepa import flops, masking, model, sigreg, train_state, train_step
from wavlejepa.data import transforms
from wavlejepa.nets import encoder, projector, waveform

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cpu_debug.py", lock_config=True)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per part (after one warm-up).")
_JSON = flags.DEFINE_string("json", "", "Write the figures to this JSON file too.")


def _fwd_bwd(fn, argnums=(1, 2)):
    """jit(value_and_grad) of sum(fn(params, x) * readout), by default with respect to params
    and x (`fn`'s two arguments; the readout is argument 0)."""

    def loss(readout, *args):
        return jnp.sum(fn(*args).astype(jnp.float32) * readout)

    return jax.jit(jax.value_and_grad(loss, argnums=argnums))


def parts(config) -> dict:
    """{part: (fwd+bwd function, args)} on the shapes of one step of `config`."""
    m = config.model
    num_samples = transforms.crop_samples(config.dataset)
    batch = config.batch_size
    params = model.init(jax.random.PRNGKey(0), m)
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    audio = jax.random.normal(keys[0], (batch, num_samples))
    frames = waveform.num_frames(num_samples, m)
    masks = masking.sample(keys[1], config.masking, batch, frames)
    capacity = masks.context_indices.shape[1]
    groups, group_frames = masks.target_indices.shape[1:]
    x_full = jax.random.normal(keys[2], (batch, frames, m.encoder_width))
    x_context = x_full[:, :capacity]
    rows = batch * (frames + groups * group_frames)
    z = jax.random.normal(keys[3], (batch * frames, m.projector_dim))
    dirs = sigreg.random_directions(keys[4], m.projector_dim, config.loss.num_slices)

    def readout(shape):
        return jax.random.normal(keys[5], shape)

    width, proj = m.encoder_width, m.projector_dim
    return {
        "conv front end": (
            _fwd_bwd(lambda p, a: waveform.apply(p, a, m), argnums=1),  # No grad for audio.
            (readout((batch, frames, width)), params["waveform_encoder"], audio),
        ),
        "encoder, all frames": (
            _fwd_bwd(lambda p, x: encoder.apply(p, x, m)),
            (readout(x_full.shape), params["context_encoder"], x_full),
        ),
        "encoder, context": (
            _fwd_bwd(lambda p, x: encoder.apply(p, x, m, lengths_B=masks.context_lengths)),
            (readout(x_context.shape), params["context_encoder"], x_context),
        ),
        "predictor": (
            _fwd_bwd(lambda p, x: model._predict(p, x, masks, m, frames)),
            (readout((batch, groups, group_frames, width)), params["predictor"], x_context),
        ),
        "projector": (
            _fwd_bwd(lambda p, x: projector.apply(p, x, m)),
            (readout((rows, proj)), params["projector"], jnp.zeros((rows, width))),
        ),
        "SIGReg": (
            _fwd_bwd(lambda d, x: sigreg.sigreg(x, d)[None], argnums=2),  # Slices: no grad.
            (jnp.ones((1,)), dirs, z),
        ),
    }


def analytic_gflop(config) -> dict:
    """Forward + backward GFLOP per part (the front end's backward is 2x its forward too)."""
    counts = flops.forward_flops(config, transforms.crop_samples(config.dataset))
    names = {
        "conv front end": "waveform_encoder",
        "encoder, all frames": "encoder_full",
        "encoder, context": "encoder_context",
        "predictor": "predictor",
        "projector": "projector",
        "SIGReg": "sigreg",
    }
    return {part: 3 * counts[key] / 1e9 for part, key in names.items()}


def main(argv):
    del argv
    config = _CONFIG.value
    result = {}
    for name, (fn, args) in parts(config).items():
        result[name] = common.time_call(fn, *args, repeats=_REPEATS.value)
    state = train_state.create(jax.random.PRNGKey(0), config)
    audio = jax.random.normal(
        jax.random.PRNGKey(1), (config.batch_size, transforms.crop_samples(config.dataset))
    )
    step = jax.jit(functools.partial(train_step.train_step, config=config))
    result["whole train step"] = common.time_call(
        lambda s, a: step(s, {"audio": a})[1], state, audio, repeats=_REPEATS.value
    )
    gflop = analytic_gflop(config)
    total = sum(v for k, v in result.items() if k != "whole train step")
    print(f"{'part':22s} {'s/call':>8s} {'share':>6s} {'GFLOP':>8s} {'GFLOP/s':>8s}")
    for name, seconds in result.items():
        share = f"{100 * seconds / total:5.1f}%" if name in gflop else "     -"
        g = gflop.get(name, sum(gflop.values()))
        print(f"{name:22s} {seconds:8.3f} {share} {g:8.2f} {g / seconds:8.1f}")
    common.write_json(_JSON.value, {"seconds": result, "gflop": gflop})


if __name__ == "__main__":
    app.run(main)
