"""Predictor: from the encoded context, predict the encoder's representation of target frames.

Queries are a learned mask token plus the sin-cos position of each target frame; each block
self-attends over the queries, cross-attends to the context (projected to the predictor width),
and applies an MLP; the output is projected back to the encoder width.
"""

import jax
import jax.numpy as jnp
import ml_collections

from wavlejepa.nets import layers, transformer


def init(key: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
    k_in, k_token, k_blocks, k_out = jax.random.split(key, 4)
    width = cfg.predictor_width
    return {
        "context_projection": layers.dense_init(k_in, cfg.encoder_width, width),
        "mask_token": 0.02 * jax.random.normal(k_token, (width,), jnp.float32),
        "blocks": transformer.stack_init(
            k_blocks,
            cfg.predictor_depth,
            width=width,
            mlp_dim=cfg.predictor_mlp_dim,
            cross_attention_dim=width,
        ),
        "final_norm": layers.layer_norm_init(width),
        "output_projection": layers.dense_init(k_out, width, cfg.encoder_width),
    }


def apply(
    params: dict,
    context_BxKxD: jax.Array,
    context_lengths_B: jax.Array,
    target_positions_BxQ: jax.Array,
    target_lengths_B: jax.Array,
    cfg: ml_collections.ConfigDict,
    *,
    num_frames: int,
    groups_per_context: int = 1,
) -> jax.Array:
    """Predicts `[batch, queries, encoder_width]` for the frames at `target_positions`.

    Args:
      context_BxKxD: encoded context frames, the first `context_lengths[b]` valid; with
        `groups_per_context = G` it is `[batch / G, K, D]` (`context_lengths` `[batch / G]`):
        query rows `c * G ... c * G + G - 1` (the target groups of crop c) all read context c,
        whose projection and every block's keys and values are computed once.
      target_positions_BxQ: frame index of each query, the first `target_lengths[b]` valid.
      num_frames: frames of the whole crop (size of the position table).
    """
    dtype = jnp.dtype(cfg.dtype)
    context = layers.dense_apply(params["context_projection"], context_BxKxD.astype(dtype))
    positions = jnp.asarray(layers.sincos_positions(num_frames, cfg.predictor_width), dtype)
    queries = params["mask_token"].astype(dtype) + positions[target_positions_BxQ]
    x = transformer.stack_apply(
        params["blocks"],
        queries,
        remat=cfg.remat,
        scan=cfg.scan_layers,
        num_heads=cfg.predictor_heads,
        lengths_B=target_lengths_B,
        context_BxSxD=context,
        context_lengths_B=context_lengths_B,
        context_repeat=groups_per_context,
        block_norm=cfg.block_norm,
        gelu=cfg.gelu,
    )
    x = layers.layer_norm_apply(params["final_norm"], x)
    return layers.dense_apply(params["output_projection"], x)
