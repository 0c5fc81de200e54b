r"""What gathering the context frames saves over running the encoder on the masked full crop.

  python -m benchmarks.context_gather --config=configs/default.py --config.batch_size=8

WavJEPA's code runs its context encoder over all frames and hides the non-context frames as
attention keys, which costs a full-length pass. We gather the (at most capacity) context frames
first. This times the context encoder's forward+backward both ways on the config's shapes, with
the same params and a matching key padding, and prints the saving.
"""

import jax
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from wavlejepa import masking
from wavlejepa.data import transforms
from wavlejepa.nets import encoder, waveform

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cpu_debug.py", lock_config=True)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats.")


def main(argv):
    del argv
    config = _CONFIG.value
    m = config.model
    num_samples = transforms.crop_samples(config.dataset)
    frames = waveform.num_frames(num_samples, m)
    capacity = masking.context_capacity(config.masking, frames)
    params = encoder.init(jax.random.PRNGKey(0), m)
    masks = masking.sample(jax.random.PRNGKey(1), config.masking, config.batch_size, frames)

    def loss(p, x, lengths):
        return encoder.apply(p, x, m, lengths_B=lengths).astype("float32").sum()

    grad = jax.jit(jax.grad(loss))
    times = {}
    for name, length in (("full masked crop", frames), ("gathered context", capacity)):
        x = jax.random.normal(jax.random.PRNGKey(2), (config.batch_size, length, m.encoder_width))
        times[name] = common.time_call(
            grad, params, x, masks.context_lengths, repeats=_REPEATS.value
        )
        print(f"{name:18s} {length:4d} frames  {1e3 * times[name]:9.1f} ms fwd+bwd", flush=True)
    saving = 1 - times["gathered context"] / times["full masked crop"]
    print(f"device {jax.devices()[0].device_kind}: gathering saves {100 * saving:.0f}% of it")


if __name__ == "__main__":
    app.run(main)
