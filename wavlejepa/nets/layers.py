"""Primitive layers shared by the networks: dense, layer norm, and fixed sin-cos positions.

Params are float32 nested dicts; `apply` functions compute in the dtype of their input.
"""

import jax
import jax.numpy as jnp
import numpy as np

# Linear weights: truncated normal, std 0.02, zero biases (WavJEPA / ViT convention).
_dense_init = jax.nn.initializers.truncated_normal(stddev=0.02)


def dense_init(key: jax.Array, in_dim: int, out_dim: int) -> dict:
    return {
        "kernel": _dense_init(key, (in_dim, out_dim), jnp.float32),
        "bias": jnp.zeros((out_dim,), jnp.float32),
    }


def dense_apply(params: dict, x: jax.Array) -> jax.Array:
    """`x [..., in_dim]` -> `[..., out_dim]` in x's dtype."""
    kernel = params["kernel"].astype(x.dtype)
    return jnp.einsum("...i,io->...o", x, kernel) + params["bias"].astype(x.dtype)


# GELU's two forms: the tanh approximation (jax.nn.gelu's default) or the exact erf form
# (PyTorch's nn.GELU(), which WavJEPA uses).
GELUS = ("tanh", "exact")


def gelu(x: jax.Array, form: str = "tanh") -> jax.Array:
    """GELU in one of `GELUS`' forms."""
    if form not in GELUS:
        raise ValueError(f"gelu={form!r}: choose one of {GELUS}.")
    return jax.nn.gelu(x, approximate=form == "tanh")


def layer_norm_init(dim: int) -> dict:
    return {"scale": jnp.ones((dim,), jnp.float32), "bias": jnp.zeros((dim,), jnp.float32)}


def layer_norm_apply(params: dict, x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Normalises the last axis in float32 whatever x's dtype; returns x's dtype."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps) * params["scale"] + params["bias"]
    return y.astype(x.dtype)


def time_norm(x_BxTxD: jax.Array, valid_B: jax.Array | None = None, eps: float = 1e-5):
    """Each channel normalised over time, in float32: (x - mean) / sqrt(var + eps), the
    statistics over the first `valid[b]` steps of each example (all of them when None)."""
    x32 = x_BxTxD.astype(jnp.float32)
    if valid_B is None:
        weight_BxTx1 = jnp.ones(x32.shape[:2] + (1,), jnp.float32)
    else:
        weight_BxTx1 = (jnp.arange(x32.shape[1])[None, :] < valid_B[:, None])[..., None]
        weight_BxTx1 = weight_BxTx1.astype(jnp.float32)
    count_Bx1x1 = jnp.maximum(jnp.sum(weight_BxTx1, axis=1, keepdims=True), 1.0)
    mean = jnp.sum(x32 * weight_BxTx1, axis=1, keepdims=True) / count_Bx1x1
    var = jnp.sum(jnp.square(x32 - mean) * weight_BxTx1, axis=1, keepdims=True) / count_Bx1x1
    return (x32 - mean) * jax.lax.rsqrt(var + eps)


def sincos_positions(num_positions: int, dim: int) -> np.ndarray:
    """Fixed 1-D sin-cos position table `[num_positions, dim]` (MAE / WavJEPA form).

    Column i < dim/2 is sin(p * w_i), column dim/2 + i is cos(p * w_i), w_i = 10000^(-2i/dim).
    """
    if dim % 2:
        raise ValueError(f"sin-cos positions need an even width, got {dim}.")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    angles = np.arange(num_positions, dtype=np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)
