"""Transformer blocks (self-attention, optional cross-attention, GELU MLP), LayerNorm before
each sublayer (pre-LN, ViT) or after each residual add (post-LN, WavJEPA's PyTorch blocks).

Padding is given as lengths: the valid tokens of each example come first (the masking module
gathers them that way), which `jax.nn.dot_product_attention` takes as `*_seq_lengths` and the
cuDNN kernel supports without a dense mask.
"""

import functools

import jax
import jax.numpy as jnp

from wavlejepa.nets import layers

# Where each sublayer's LayerNorm sits: before it ("pre") or after its residual add ("post").
BLOCK_NORMS = ("pre", "post")


def attention_init(key: jax.Array, query_dim: int, kv_dim: int, width: int) -> dict:
    k_q, k_k, k_v, k_o = jax.random.split(key, 4)
    return {
        "query": layers.dense_init(k_q, query_dim, width),
        "key": layers.dense_init(k_k, kv_dim, width),
        "value": layers.dense_init(k_v, kv_dim, width),
        "out": layers.dense_init(k_o, width, query_dim),
    }


def attention_apply(
    params: dict,
    x_BxTxD: jax.Array,
    kv_BxSxE: jax.Array,
    *,
    num_heads: int,
    query_lengths_B: jax.Array | None = None,
    kv_lengths_B: jax.Array | None = None,
    kv_repeat: int = 1,
) -> jax.Array:
    """Multi-head attention from `x [batch, queries, dim]` to `kv [batch, keys, kv_dim]`.

    Keys at or past `kv_lengths[b]` are ignored; outputs past `query_lengths[b]` are zero.

    `kv_repeat = R` shares one key/value sequence among R consecutive query rows: `x` and
    `query_lengths` are `[kv_batch * R, ...]` while `kv` and `kv_lengths` are `[kv_batch, ...]`;
    keys and values are projected once per kv row and then repeated (the predictor's target
    groups of one crop all read that crop's context).
    """
    batch, num_queries, _ = x_BxTxD.shape
    kv_batch, num_keys, _ = kv_BxSxE.shape
    if kv_batch * kv_repeat != batch:
        raise ValueError(
            f"attention: {batch} query rows but {kv_batch} key/value rows x kv_repeat={kv_repeat}"
        )
    width = params["query"]["kernel"].shape[1]
    head_dim = width // num_heads
    q_BxTxNxH = layers.dense_apply(params["query"], x_BxTxD).reshape(
        batch, num_queries, num_heads, head_dim
    )

    def keys_or_values(dense_params: dict) -> jax.Array:
        projected = layers.dense_apply(dense_params, kv_BxSxE)
        projected = projected.reshape(kv_batch, num_keys, num_heads, head_dim)
        return jnp.repeat(projected, kv_repeat, axis=0) if kv_repeat > 1 else projected

    k_BxSxNxH = keys_or_values(params["key"])
    v_BxSxNxH = keys_or_values(params["value"])
    if kv_repeat > 1 and kv_lengths_B is not None:
        kv_lengths_B = jnp.repeat(kv_lengths_B, kv_repeat, axis=0)
    out_BxTxNxH = jax.nn.dot_product_attention(
        q_BxTxNxH,
        k_BxSxNxH,
        v_BxSxNxH,
        query_seq_lengths=query_lengths_B,
        key_value_seq_lengths=kv_lengths_B,
    )
    return layers.dense_apply(params["out"], out_BxTxNxH.reshape(batch, num_queries, width))


def mlp_init(key: jax.Array, dim: int, hidden_dim: int) -> dict:
    k_in, k_out = jax.random.split(key)
    return {
        "hidden": layers.dense_init(k_in, dim, hidden_dim),
        "out": layers.dense_init(k_out, hidden_dim, dim),
    }


def mlp_apply(params: dict, x_BxTxD: jax.Array, *, gelu: str = "tanh") -> jax.Array:
    """`[batch, tokens, dim]` -> same shape, through a GELU hidden layer (`layers.gelu`)."""
    hidden_BxTxF = layers.gelu(layers.dense_apply(params["hidden"], x_BxTxD), gelu)
    return layers.dense_apply(params["out"], hidden_BxTxF)


def block_init(
    key: jax.Array, width: int, mlp_dim: int, *, cross_attention_dim: int | None = None
) -> dict:
    """One block; with `cross_attention_dim` it also attends to a context of that width."""
    k_self, k_cross, k_mlp = jax.random.split(key, 3)
    params = {
        "self_attention_norm": layers.layer_norm_init(width),
        "self_attention": attention_init(k_self, width, width, width),
        "mlp_norm": layers.layer_norm_init(width),
        "mlp": mlp_init(k_mlp, width, mlp_dim),
    }
    if cross_attention_dim is not None:
        params["cross_attention_norm"] = layers.layer_norm_init(width)
        params["cross_attention"] = attention_init(k_cross, width, cross_attention_dim, width)
    return params


def _residual_attention(
    params: dict,
    name: str,
    x_BxTxD: jax.Array,
    context_BxSxD: jax.Array | None,
    *,
    post_norm: bool,
    **kwargs,
) -> jax.Array:
    """Residual attention; the keys and values are the queries' own input when `context` is
    None (self-attention). Pre-norm: `x + attention(norm(x), context)`; post-norm:
    `norm(x + attention(x, context))`."""
    norm = functools.partial(layers.layer_norm_apply, params[f"{name}_norm"])
    queries_BxTxD = x_BxTxD if post_norm else norm(x_BxTxD)
    kv_BxSxD = queries_BxTxD if context_BxSxD is None else context_BxSxD
    out_BxTxD = x_BxTxD + attention_apply(params[name], queries_BxTxD, kv_BxSxD, **kwargs)
    return norm(out_BxTxD) if post_norm else out_BxTxD


def block_apply(
    params: dict,
    x_BxTxD: jax.Array,
    *,
    num_heads: int,
    lengths_B: jax.Array | None = None,
    context_BxSxD: jax.Array | None = None,
    context_lengths_B: jax.Array | None = None,
    context_repeat: int = 1,
    block_norm: str = "pre",
    gelu: str = "tanh",
) -> jax.Array:
    """`x [batch, tokens, width]` -> same shape; valid tokens of x come first (`lengths`).

    With `context_repeat = R`, the context and its lengths are `[batch / R, ...]`, shared by R
    consecutive rows of x (`attention_apply`'s `kv_repeat`). `block_norm` is "pre" or "post"
    (where each sublayer's LayerNorm sits), `gelu` the MLP's GELU ("tanh" or "exact").
    """
    if block_norm not in BLOCK_NORMS:
        raise ValueError(f"block_norm={block_norm!r}: choose one of {BLOCK_NORMS}.")
    post_norm = block_norm == "post"
    x_BxTxD = _residual_attention(
        params,
        "self_attention",
        x_BxTxD,
        None,
        post_norm=post_norm,
        num_heads=num_heads,
        query_lengths_B=lengths_B,
        kv_lengths_B=lengths_B,
    )
    if "cross_attention" in params:
        x_BxTxD = _residual_attention(
            params,
            "cross_attention",
            x_BxTxD,
            context_BxSxD,
            post_norm=post_norm,
            num_heads=num_heads,
            query_lengths_B=lengths_B,
            kv_lengths_B=context_lengths_B,
            kv_repeat=context_repeat,
        )
    norm = functools.partial(layers.layer_norm_apply, params["mlp_norm"])
    if post_norm:
        return norm(x_BxTxD + mlp_apply(params["mlp"], x_BxTxD, gelu=gelu))
    return x_BxTxD + mlp_apply(params["mlp"], norm(x_BxTxD), gelu=gelu)


def stack_init(key: jax.Array, depth: int, **block_kwargs) -> dict:
    """`depth` blocks with their params stacked on a leading axis (run with `lax.scan`)."""
    blocks = [block_init(k, **block_kwargs) for k in jax.random.split(key, depth)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)


def stack_apply(
    params: dict,
    x_BxTxD: jax.Array,
    *,
    remat: bool = False,
    scan: bool = True,
    **block_kwargs,
) -> jax.Array:
    """Runs the stacked blocks in order with `lax.scan` (one compiled block, any depth).

    `scan=False` unrolls the loop: longer compiles, but XLA's cost analysis then counts every
    block (it counts a loop body once).
    """
    step = lambda p, x: block_apply(p, x, **block_kwargs)
    if remat:
        step = jax.checkpoint(step)

    def body(x, block_params):
        return step(block_params, x), None

    x_BxTxD, _ = jax.lax.scan(body, x_BxTxD, params, unroll=not scan)
    return x_BxTxD
