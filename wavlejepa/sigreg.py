"""SIGReg: the Epps-Pulley normality statistic over random 1-D projections (LeJEPA).

The statistic compares the empirical characteristic function of each projected column with the
standard normal's, `exp(-t^2/2)`, on knots t in [0, t_max] with trapezoid weights (2*dt inside,
dt at the ends) times the window exp(-t^2/2), and multiplies by the sample count N: it is the
test statistic, so it grows with N for non-Gaussian data (about 0.40 * N for a constant sample)
and stays of order 1 for Gaussian data.

Under `jit` over globally sharded arrays (the training step's data parallelism) the means are
global: XLA sums the cos/sin terms over devices before squaring.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wavlejepa.data import transforms
from wavlejepa.nets import waveform


def _knots_and_weights(t_max: float, num_knots: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, t_max, num_knots)
    dt = t_max / (num_knots - 1)
    weights = np.full((num_knots,), 2.0 * dt)
    weights[[0, -1]] = dt
    return t.astype(np.float32), (weights * np.exp(-0.5 * t**2)).astype(np.float32)


def epps_pulley(
    samples_NxM: jax.Array,
    t_max: float = 3.0,
    num_knots: int = 17,
    *,
    weights_N: jax.Array | None = None,
) -> jax.Array:
    """Epps-Pulley statistic of each column of `samples [N, M]` -> `[M]`, in float32.

    Args:
      weights_N: optional 0/1 validity of each row; N is then the number of valid rows.
    """
    t_K, weights_K = _knots_and_weights(t_max, num_knots)
    x_NxM = samples_NxM.astype(jnp.float32)
    if weights_N is None:
        weights_N = jnp.ones(x_NxM.shape[:1], jnp.float32)
    weights_N = weights_N.astype(jnp.float32)
    # cos(t_k x) and sin(t_k x) on the evenly spaced knots t_k = k * dt by rotation from
    # k * dt * x to (k + 1) * dt * x: one cos and one sin of [N, M] instead of K of each (on CPU
    # the transcendentals were 7% of a small model's step for 0.3% of its FLOPs).
    angle_NxM = x_NxM * np.float32(t_K[1])
    step_cos_NxM, step_sin_NxM = jnp.cos(angle_NxM), jnp.sin(angle_NxM)
    cos_NxM, sin_NxM = jnp.ones_like(x_NxM), jnp.zeros_like(x_NxM)
    cos_sums, sin_sums = [], []
    for k in range(num_knots):
        if k:  # Knot 0 is cos 1, sin 0; each later knot rotates the previous one by dt * x.
            cos_NxM, sin_NxM = (
                cos_NxM * step_cos_NxM - sin_NxM * step_sin_NxM,
                sin_NxM * step_cos_NxM + cos_NxM * step_sin_NxM,
            )
        cos_sums.append(weights_N @ cos_NxM)
        sin_sums.append(weights_N @ sin_NxM)
    cos_sum_MxK = jnp.stack(cos_sums, axis=-1)
    sin_sum_MxK = jnp.stack(sin_sums, axis=-1)
    count = jnp.sum(weights_N)
    cos_mean, sin_mean = cos_sum_MxK / count, sin_sum_MxK / count
    err_MxK = jnp.square(cos_mean - np.exp(-0.5 * t_K**2)) + jnp.square(sin_mean)
    return count * (err_MxK @ weights_K)


def random_directions(key: jax.Array, dim: int, num_slices: int) -> jax.Array:
    """`[dim, num_slices]` Gaussian directions normalised to unit columns."""
    directions = jax.random.normal(key, (dim, num_slices), jnp.float32)
    return directions / jnp.linalg.norm(directions, axis=0, keepdims=True)


def sigreg(
    embeddings_NxD: jax.Array,
    directions_DxM: jax.Array,
    t_max: float = 3.0,
    num_knots: int = 17,
    *,
    weights_N: jax.Array | None = None,
) -> jax.Array:
    """Mean Epps-Pulley statistic of the embeddings projected on each direction (a scalar)."""
    projected_NxM = embeddings_NxD.astype(jnp.float32) @ directions_DxM
    return jnp.mean(epps_pulley(projected_NxM, t_max, num_knots, weights_N=weights_N))


def _frames_per_crop(config: ml_collections.ConfigDict) -> int:
    return waveform.num_frames(transforms.crop_samples(config.dataset), config.model)


def sample_shape(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(crops, frames) of the rows SIGReg tests each step under the scale rule (losses.py):
    at most loss.sigreg_crops of the global batch and loss.sigreg_frames of each crop."""
    frames = _frames_per_crop(config)
    loss = config.loss
    return min(config.batch_size, loss.sigreg_crops), min(frames, loss.sigreg_frames)


def short_sample_warning(config: ml_collections.ConfigDict) -> str | None:
    """A warning when the batch has fewer crops than loss.sigreg_crops while its crops hold
    frames SIGReg leaves untested: N, and with it the pull lambda * N that the scale rule keeps
    fixed, then falls short of loss.sigreg_crops x loss.sigreg_frames, and a larger
    loss.sigreg_frames restores it. None otherwise (a batch too small to hold N rows tests all)."""
    crops, frames = sample_shape(config)
    wanted = config.loss.sigreg_crops * config.loss.sigreg_frames
    available = _frames_per_crop(config)
    if crops * frames >= wanted or frames >= available:
        return None
    enough = min(available, -(-wanted // crops))
    weight = config.loss.sigreg_weight
    return (
        f"SIGReg tests {crops} x {frames} = {crops * frames} rows a step, not "
        f"loss.sigreg_crops x loss.sigreg_frames = {wanted}: the batch has {crops} crops. Its "
        f"pull, sigreg_weight x rows, is {weight * crops * frames:g} instead of {weight * wanted:g}"
        f" (the scale rule, wavlejepa/losses.py). --config.loss.sigreg_frames={enough} tests "
        f"{crops * enough} rows."
    )


def sigreg_collapse_value(config: ml_collections.ConfigDict) -> float:
    """SIGReg of a collapsed batch, 0.40 * N, N the rows the statistic tests (`sample_shape`).
    Gaussian data gives ~1."""
    crops, frames = sample_shape(config)
    return 0.40 * crops * frames
