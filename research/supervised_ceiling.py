r"""What labels buy: the encoder trained *supervised* on the held-out probe's own training data.

  python -m research.supervised_ceiling --config=configs/quickstart.py --steps=750 \
      --probe_every=250 --fsdd_dir=../shared/data/fsdd/recordings --json=/tmp/sup.json

`research.learning` asks whether self-supervised training makes the frozen encoder better on a
speaker it never heard. This asks how far the same encoder gets there when it is trained on the
answer: the config's waveform and context encoders (its model size, crops and seed), mean-pooled
over their real frames, with a linear digit head, trained by cross-entropy on the clips the
held-out probe trains on (FSDD takes 10-49 of every speaker but --heldout_speaker: the
self-supervised run's audio, with its digit labels). The optimizer is the config's
(`train_state.create_optimizer`, its schedule over --steps). Each step draws
`config.batch_size` of those clips (an epoch-wise shuffle), one random crop of
`config.dataset.crop_seconds` each (shorter clips whole, padded, the padding masked),
normalised like a training crop.

At step 0 and every --probe_every steps the encoder is frozen and probed exactly as
`research.learning` probes a checkpoint (the same embedding pass and linear probes, each with
mean and mean_std pooling, and the encoder's rank; no z rank: no projector), and the trained
head is scored on the held-out speaker's clips directly ("head" column: the supervised model end
to end). Nothing is written to disk but --json. The held-out speaker's audio is never trained on.
The first command (full FSDD, alone on our shared 2-core machine, 16.5 minutes) printed

  step         digits speakers  heldout  held ms    ...     head train loss train acc
  0 (init)      0.644    0.876    0.444    0.498    ...    0.100          -         -
  250           0.840    0.804    0.604    0.628    ...    0.514      1.429     0.479
  500           0.832    0.812    0.462    0.550    ...    0.542     0.5092     0.850
  750           0.836    0.804    0.508    0.544    ...    0.482      0.274     0.930

(the columns cut at "..." are the shares, then "-" for sigreg and invariance; the table has since
gained the mean_std probes of digits and speakers and the encoder's rank, which its JSONs lack);
the JSONs of two seeds at each of two learning rates are
research/results/supervised_ceiling_small_750steps_*.json.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from research import learning
from wavlejepa import model, train_state
from wavlejepa.data import fsdd, transforms
from wavlejepa.evaluators import linear_probe
from wavlejepa.nets import layers, waveform

FLAGS = flags.FLAGS  # --config, --steps, --probe_every, --fsdd_dir, --heldout_speaker,
# --max_clips_per_split, --probe_steps, --batch_size and --json are research.learning's flags
# (one test process imports both modules, and absl refuses a flag defined twice).

ENCODERS = ("waveform_encoder", "context_encoder")  # What the embedding uses (model.embed).


def labelled_clips(data: dict, heldout: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The held-out probe's training clips (`load_fsdd` train split of the other speakers) and
    their digits int32 [clips]."""
    x, y = linear_probe.heldout_speaker_splits(
        {s: np.arange(len(data[s]["audio"]))[:, None] for s in fsdd.SPLITS}, data, heldout
    )
    return [data["train"]["audio"][i] for i in x["train"][:, 0]], y["train"].astype(np.int32)


def crop_batch(
    rng: np.random.Generator, clips: list[np.ndarray], samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """One training crop of each clip, as the input pipeline cuts a lone clip
    (`transforms.RandomCrops`: a random `samples`-long window, a shorter clip whole and
    zero-padded, each normalised over its real samples): audio float32 [clips, samples], lengths
    int32 [clips]."""
    crops = transforms.RandomCrops(num_crops=1, crop_samples=samples)
    lone = np.zeros(1, np.int64)  # clip_starts of a stretch holding one clip.
    batch = transforms.concat_crops(
        [crops.random_map({"audio": clip, "clip_starts": lone}, rng) for clip in clips]
    )
    return batch["audio"], batch["lengths"]


def trainable(start: dict, width: int) -> dict:
    """What training changes: {"encoder": the two encoders of the model params `start`, "head":
    {"kernel" [width, 10], "bias" [10]} at zero}."""
    head = {"kernel": jnp.zeros((width, 10), jnp.float32), "bias": jnp.zeros((10,), jnp.float32)}
    return {"encoder": {k: start[k] for k in ENCODERS}, "head": head}


def pooled(encoder: dict, audio_BxS: jax.Array, lengths_B: jax.Array, cfg) -> jax.Array:
    """Mean of each crop's real frames of `model.embed`: [batch, encoder_width]."""
    frames_BxTxD = model.embed(encoder, audio_BxS, cfg, lengths_B=lengths_B).astype(jnp.float32)
    valid_BxT = jnp.arange(frames_BxTxD.shape[1]) < waveform.valid_frames(lengths_B, cfg)[:, None]
    total_BxD = jnp.einsum("btd,bt->bd", frames_BxTxD, valid_BxT.astype(jnp.float32))
    return total_BxD / valid_BxT.sum(axis=1, keepdims=True)


def loss_fn(params: dict, audio_BxS, lengths_B, digits_B, cfg) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy of the head on the pooled frames, and the batch accuracy."""
    features_BxD = pooled(params["encoder"], audio_BxS, lengths_B, cfg)
    logits_Bx10 = layers.dense_apply(params["head"], features_BxD)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits_Bx10, digits_B).mean()
    return loss, (logits_Bx10.argmax(-1) == digits_B).mean()


def make_step(config):
    """A jitted (params, opt_state, audio, lengths, digits) -> (params, opt_state, loss, acc)."""
    optimizer = train_state.create_optimizer(config)
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, cfg=config.model), has_aux=True)

    @jax.jit
    def step(params, opt_state, audio_BxS, lengths_B, digits_B):
        (loss, accuracy), grads = grad_fn(params, audio_BxS, lengths_B, digits_B)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, accuracy

    return optimizer, step


def head_accuracy(head: dict, frames: dict, data: dict, heldout: str) -> float:
    """The trained head on the held-out speaker's clips (mean of all their frames)."""
    features = {s: np.stack([f.mean(axis=0) for f in frames[s]]) for s in fsdd.SPLITS}
    x, y = linear_probe.heldout_speaker_splits(features, data, heldout)
    logits = x["test"] @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"])
    return float(np.mean(logits.argmax(-1) == y["test"]))


def run(config, *, fsdd_dir: str, heldout: str, steps: int, probe_every: int, max_clips: int = 0,
        probe_steps_lbfgs: int = 200, batch_size: int = 16) -> dict:  # fmt: skip
    """Trains and probes (module docstring); returns what --json gets."""
    config = config.copy_and_resolve_references()
    config.total_steps = steps  # The learning-rate schedule's length.
    data = fsdd.load_fsdd(fsdd_dir)
    clips, digits = labelled_clips(data, heldout)
    probe_data = learning.subsample(data, max_clips)
    probe_cfg = linear_probe.default_config()
    probe_cfg.steps = probe_steps_lbfgs
    # research.learning's step 0 of this config (its random-init row); the probe embeds with
    # the trained encoders.
    params = trainable(learning.initial_params(config), config.model.encoder_width)
    optimizer, step_fn = make_step(config)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(config.seed)
    samples = transforms.crop_samples(config.dataset)
    order, cursor, log = rng.permutation(len(clips)), 0, []
    rows, probed = [], set(learning.probe_steps(steps, probe_every))
    for step in range(steps + 1):
        if step in probed:
            recent = log[-probe_every:]
            metrics = {
                "train_loss": float(np.mean([m[0] for m in recent])) if recent else None,
                "train_accuracy": float(np.mean([m[1] for m in recent])) if recent else None,
            }
            step_row, frames = learning.probe_step(  # No projector here: no z rank.
                step, params["encoder"], config, probe_data, heldout, probe_cfg, batch_size,
                share_frames=30, metrics=metrics,  # 30: research.learning's default.
            )  # fmt: skip
            step_row["head"] = head_accuracy(params["head"], frames, probe_data, heldout)
            logging.info("Step %d: the head on %s reads %.3f", step, heldout, step_row["head"])
            rows.append(step_row)
        if step == steps:
            break
        if cursor + config.batch_size > len(order):
            order, cursor = rng.permutation(len(clips)), 0
        batch = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        audio, lengths = crop_batch(rng, [clips[i] for i in batch], samples)
        params, opt_state, loss, accuracy = step_fn(params, opt_state, audio, lengths,
                                                    digits[batch])  # fmt: skip
        log.append((float(loss), float(accuracy)))
    settings = dict(
        model_size=config.model.size, seed=config.seed, steps=steps, probe_every=probe_every,
        fsdd_dir=fsdd_dir, heldout_speaker=heldout, train_clips=len(clips),
        batch_size=config.batch_size, peak_lr=config.optimizer.peak_lr,
        probe_lbfgs_steps=probe_cfg.steps,
    )  # fmt: skip
    return {"settings": settings, "steps": rows}


# research.learning's columns but z's rank (no projector), then the trained head and the
# training loss and accuracy.
COLUMNS = tuple(c for c in learning.COLUMNS if c[1] != "projected_rank") + (
    ("head", "head", "{:9.3f}"),
    ("train loss", "train_loss", "{:11.4g}"),
    ("train acc", "train_accuracy", "{:10.3f}"),
)


def main(argv):
    result = run(FLAGS.config, **learning.run_args(argv))
    learning.report(result, result["steps"], COLUMNS)


if __name__ == "__main__":
    app.run(main)
