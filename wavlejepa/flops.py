"""Analytic FLOP count of one training step.

A multiply-add counts as 2 FLOPs, as in XLA's cost analysis. `forward_flops` counts the matrix
multiplies and convolutions (the model FLOPs that MFU is defined on) per component, and the
elementwise work (GELU 8, LayerNorm/GroupNorm 7, softmax 4, residual add 1 FLOP per element,
counted by hand from their formulas) under "elementwise", which matters only for tiny models.
Backward = 2 x forward. Attention runs on the static (padded) shapes the step computes.
"""

import math

import ml_collections

from wavlejepa import masking, sigreg
from wavlejepa.nets import waveform

GELU, NORM, SOFTMAX = 8, 7, 4  # FLOPs per element (tanh GELU; mean, var, scale, shift).


def _dense(tokens: int, d_in: int, d_out: int) -> int:
    return 2 * tokens * d_in * d_out


def _attention(
    queries: int, keys: int, q_dim: int, kv_dim: int, width: int, *, project_kv: bool = True
) -> int:
    """One attention; `project_kv=False` leaves out the key/value projections (shared)."""
    projections = _dense(queries, q_dim, width) * 2
    if project_kv:
        projections += _dense(keys, kv_dim, width) * 2
    scores_and_values = 2 * (2 * queries * keys * width)
    return projections + scores_and_values


def _encoder_block(tokens: int, width: int, mlp_dim: int) -> int:
    return _attention(tokens, tokens, width, width, width) + 2 * _dense(tokens, width, mlp_dim)


def _block_elementwise(
    queries: int, keys_per_attention: tuple[int, ...], width: int, mlp: int, heads: int
):
    """Norms, residual adds, softmax and GELU of one block."""
    attentions = len(keys_per_attention)
    per_norm_and_residual = (NORM + 1) * queries * width
    softmax = sum(SOFTMAX * heads * queries * keys for keys in keys_per_attention)
    return (attentions + 1) * per_norm_and_residual + softmax + GELU * queries * mlp


def _front_end(m: ml_collections.ConfigDict, num_samples: int, frames: int) -> tuple[int, int]:
    """The conv stack and its projection to the encoder width: (matmul, elementwise) FLOPs."""
    conv, length, c_in = 0, num_samples, 1
    elementwise = 0
    for i, (kernel, stride) in enumerate(zip(m.conv_kernels, m.conv_strides, strict=True)):
        length = (length - kernel) // stride + 1
        conv += 2 * length * kernel * c_in * m.conv_channels
        elementwise += (GELU + (NORM if i == 0 else 0)) * length * m.conv_channels
        c_in = m.conv_channels
    conv += _dense(frames, m.conv_channels, m.encoder_width)
    elementwise += NORM * frames * m.conv_channels + frames * m.encoder_width  # LN, + positions.
    return conv, elementwise


def forward_flops(config: ml_collections.ConfigDict, num_samples: int) -> dict[str, int]:
    """Forward FLOPs per component for one global batch of `config.batch_size` crops."""
    m, batch = config.model, config.batch_size
    frames = waveform.num_frames(num_samples, m)
    capacity = masking.context_capacity(config.masking, frames)
    groups = config.masking.num_target_groups
    queries = config.masking.spans_per_target_group * config.masking.span_frames

    conv, elementwise = _front_end(m, num_samples, frames)

    full = m.encoder_depth * _encoder_block(frames, m.encoder_width, m.encoder_mlp_dim)
    context = m.encoder_depth * _encoder_block(capacity, m.encoder_width, m.encoder_mlp_dim)

    p = m.predictor_width
    block = (
        _attention(queries, queries, p, p, p)
        + _attention(queries, capacity, p, p, p, project_kv=False)
        + 2 * _dense(queries, p, m.predictor_mlp_dim)
    )
    # The target groups of a crop share its context's projection and cross-attention keys and
    # values (computed once per crop); everything else runs once per group.
    shared_context = _dense(capacity, m.encoder_width, p) + m.predictor_depth * 2 * _dense(
        capacity, p, p
    )
    predictor = shared_context + groups * (
        m.predictor_depth * block + _dense(queries, p, m.encoder_width)
    )

    d, h = m.encoder_width, m.encoder_heads
    elementwise += m.encoder_depth * (
        _block_elementwise(frames, (frames,), d, m.encoder_mlp_dim, h)
        + _block_elementwise(capacity, (capacity,), d, m.encoder_mlp_dim, h)
    )
    elementwise += NORM * (frames + capacity) * d  # Final norms.
    elementwise += (
        groups
        * m.predictor_depth
        * _block_elementwise(
            queries, (queries, capacity), p, m.predictor_mlp_dim, m.predictor_heads
        )
    )

    dims = (m.encoder_width, *m.projector_hidden_dims, m.projector_dim)
    # The projector maps every frame of the full pass and every prediction.
    rows = frames + groups * queries
    projector = sum(_dense(rows, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    per_crop = {
        "waveform_encoder": conv,
        "encoder_full": full,
        "encoder_context": context,
        "predictor": predictor,
        "projector": projector,
        "elementwise": elementwise,
    }
    totals = {name: batch * flops for name, flops in per_crop.items()}
    # SIGReg projects its sampled rows onto the slices (cos/sin terms are transcendentals).
    rows_tested = math.prod(sigreg.sample_shape(config))
    totals["sigreg"] = _dense(rows_tested, m.projector_dim, config.loss.num_slices)
    return totals


def train_step_flops(
    config: ml_collections.ConfigDict, num_samples: int, *, elementwise: bool = True
) -> int:
    """Forward + backward (2 x forward) FLOPs of one train step.

    With `elementwise=False`, only matrix multiplies and convolutions: the MFU numerator.
    """
    counts = forward_flops(config, num_samples)
    if not elementwise:
        counts.pop("elementwise")
    return 3 * sum(counts.values())


def attention_score_flops(config: ml_collections.ConfigDict, num_samples: int) -> int:
    """Forward FLOPs of the quadratic part of attention (scores and weighted values) alone."""
    m, batch = config.model, config.batch_size
    frames = waveform.num_frames(num_samples, m)
    capacity = masking.context_capacity(config.masking, frames)
    queries = config.masking.spans_per_target_group * config.masking.span_frames
    quadratic = lambda q, k, width: 4 * q * k * width
    encoder = m.encoder_depth * (
        quadratic(frames, frames, m.encoder_width) + quadratic(capacity, capacity, m.encoder_width)
    )
    predictor = (
        config.masking.num_target_groups
        * m.predictor_depth
        * (
            quadratic(queries, queries, m.predictor_width)
            + quadratic(queries, capacity, m.predictor_width)
        )
    )
    return batch * (encoder + predictor)
