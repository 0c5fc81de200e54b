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
    clip_ids_BxT: jax.Array | None = None,
    top_blocks: int = 0,
):
    """`frames [batch, frames, width]` (positions already added) -> `[batch, frames, width]`.

    With `lengths`, only the first `lengths[b]` frames of example b are attended to; with
    `clip_ids [batch, frames]` (packed crops) a frame attends only to frames of its clip. With
    `top_blocks` > 0 it also returns WavJEPA's targets `[batch, frames, width]` in float32: the
    outputs of the last `top_blocks` blocks, each instance-normalised over the (valid) frames,
    averaged.
    """
    x = transformer.stack_apply(
        params["blocks"],
        frames_BxTxD.astype(jnp.dtype(cfg.dtype)),
        remat=cfg.remat,
        scan=cfg.scan_layers,
        return_all=top_blocks > 0,
        num_heads=cfg.encoder_heads,
        lengths_B=lengths_B,
        self_mask_Bx1xTxT=(
            None if clip_ids_BxT is None else transformer.same_clip_mask(clip_ids_BxT, clip_ids_BxT)
        ),
    )
    if not top_blocks:
        return layers.layer_norm_apply(params["final_norm"], x)
    x, all_LxBxTxD = x
    out = layers.layer_norm_apply(params["final_norm"], x)
    normalise = lambda y_BxTxD: layers.time_norm(y_BxTxD, lengths_B)
    targets_BxTxD = jnp.mean(jax.vmap(normalise)(all_LxBxTxD[-top_blocks:]), axis=0)
    return out, targets_BxTxD
