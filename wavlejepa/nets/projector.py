"""Projector MLP into SIGReg space (training only): Linear -> LayerNorm -> GELU ... -> Linear."""

import jax
import jax.numpy as jnp
import ml_collections

from wavlejepa.nets import layers


def init(key: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
    dims = (cfg.encoder_width, *cfg.projector_hidden_dims, cfg.projector_dim)
    keys = jax.random.split(key, len(dims) - 1)
    params = {}
    for i, (k, d_in, d_out) in enumerate(zip(keys, dims[:-1], dims[1:], strict=True)):
        params[f"dense_{i}"] = layers.dense_init(k, d_in, d_out)
        if i < len(dims) - 2:
            params[f"norm_{i}"] = layers.layer_norm_init(d_out)
    return params


def apply(params: dict, x_NxD: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """`x [..., encoder_width]` -> `[..., projector_dim]`."""
    x = x_NxD.astype(jnp.dtype(cfg.dtype))
    num_layers = len(cfg.projector_hidden_dims) + 1
    for i in range(num_layers):
        x = layers.dense_apply(params[f"dense_{i}"], x)
        if i < num_layers - 1:
            x = layers.gelu(layers.layer_norm_apply(params[f"norm_{i}"], x), cfg.gelu)
    return x
