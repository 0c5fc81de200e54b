"""ContextEncoder: the transformer over frame embeddings (all frames, or the gathered context)."""

import jax
import jax.numpy as jnp
import ml_collections

from wavlejepa.nets import layers, transformer


def init(key: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
    return {
        "blocks": transformer.stack_init(
            key, cfg.encoder_depth, width=cfg.encoder_width, mlp_dim=cfg.encoder_mlp_dim
        ),
        "final_norm": layers.layer_norm_init(cfg.encoder_width),
    }


def apply(
    params: dict,
    frames_BxTxD: jax.Array,
    cfg: ml_collections.ConfigDict,
    *,
    lengths_B: jax.Array | None = None,
) -> jax.Array:
    """`frames [batch, frames, width]` (positions already added) -> `[batch, frames, width]`.

    With `lengths [batch]`, only the first `lengths[b]` frames of example b are attended to.
    """
    x_BxTxD = transformer.stack_apply(
        params["blocks"],
        frames_BxTxD.astype(jnp.dtype(cfg.dtype)),
        remat=cfg.remat,
        scan=cfg.scan_layers,
        num_heads=cfg.encoder_heads,
        lengths_B=lengths_B,
        block_norm=cfg.block_norm,
        gelu=cfg.gelu,
    )
    return layers.layer_norm_apply(params["final_norm"], x_BxTxD, eps=cfg.encoder_final_norm_eps)
