"""WaveformEncoder: raw 16 kHz audio -> frame embeddings at 100 Hz (WavJEPA's conv front end).

Six bias-free 1-D convs (kernels 10,3,3,3,3,2; strides 5,2,2,2,2,2), GELU after each and a
per-channel GroupNorm after the first only; then LayerNorm -> Linear -> + fixed sin-cos positions.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from wavlejepa.nets import layers

# Kaiming-normal (fan-in) for the convs, as WavJEPA; kernels are [width, in, out] ("WIO").
_conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=(0, 1))

# How the conv -> encoder projection starts: "normal" (a dense layer like every other, std
# 0.02) or "identity" (conv channels must equal the encoder width). WavJEPA has no projection
# where the two widths are equal (its small-conv256 preset), which is the identity.
PROJECTION_INITS = ("normal", "identity")


def num_frames(num_samples: int, cfg: ml_collections.ConfigDict) -> int:
    """Frames the conv stack makes from `num_samples` (32,160 samples -> 200 frames)."""
    length = num_samples
    for kernel, stride in zip(cfg.conv_kernels, cfg.conv_strides, strict=True):
        length = (length - kernel) // stride + 1
    if length < 1:
        raise ValueError(f"{num_samples} samples are too short for the conv front end.")
    return length


def valid_frames(
    lengths_B: jax.Array, cfg: ml_collections.ConfigDict, *, layers_used: int | None = None
) -> jax.Array:
    """Frames whose receptive field holds only real samples, for `lengths [batch]` real samples
    at the start of each crop (the rest padding). At least 1, so every crop keeps a frame.

    `layers_used` stops after that many conv layers (the GroupNorm after conv 0 needs 1).
    """
    length = jnp.asarray(lengths_B, jnp.int32)
    pairs = list(zip(cfg.conv_kernels, cfg.conv_strides, strict=True))[:layers_used]
    for kernel, stride in pairs:
        length = jnp.maximum(length - kernel, -1) // stride + 1
    return jnp.maximum(length, 1)


def hop_samples(cfg: ml_collections.ConfigDict) -> int:
    """Samples between frames: the product of the conv strides (160 -> 100 Hz)."""
    return math.prod(cfg.conv_strides)


def receptive_samples(cfg: ml_collections.ConfigDict) -> int:
    """Samples one frame sees (240 = 15 ms): frame t reads [hop * t, hop * t + this)."""
    field, jump = 1, 1
    for kernel, stride in zip(cfg.conv_kernels, cfg.conv_strides, strict=True):
        field, jump = field + (kernel - 1) * jump, jump * stride
    return field


def samples_for_frames(frames: int, cfg: ml_collections.ConfigDict) -> int:
    """The fewest samples that give `frames` frames."""
    return receptive_samples(cfg) + (frames - 1) * hop_samples(cfg)


def frame_centres(num_frames: int, cfg: ml_collections.ConfigDict) -> np.ndarray:
    """The sample at the centre of each frame's receptive field, float64 `[num_frames]`."""
    return hop_samples(cfg) * np.arange(num_frames, dtype=np.float64) + receptive_samples(cfg) / 2


def frame_clip_ids(
    clip_starts_BxC: jax.Array, num_frames: int, cfg: ml_collections.ConfigDict
) -> jax.Array:
    """Which source clip of a packed crop each frame belongs to: int32 `[batch, frames]`.

    `clip_starts [batch, C]` are the sample offsets where clips begin in each crop (the input
    pipeline's "clip_starts": 0, then later starts, then -1s). A frame belongs to the clip its
    receptive field's centre lies in: id = the number of later starts at or before that centre
    (0 for the crop's first clip).
    """
    centres_T = jnp.asarray(frame_centres(num_frames, cfg), jnp.float32)
    starts_BxC = jnp.asarray(clip_starts_BxC, jnp.int32)
    later_BxC = starts_BxC > 0  # The first entry (0) and the -1 padding open no new clip.
    begun_BxTxC = later_BxC[:, None, :] & (starts_BxC[:, None, :] <= centres_T[None, :, None])
    return jnp.sum(begun_BxTxC, axis=-1, dtype=jnp.int32)


def init(key: jax.Array, cfg: ml_collections.ConfigDict) -> dict:
    """Float32 params of the conv stack, its norms and the projection to the encoder width."""
    keys = jax.random.split(key, len(cfg.conv_kernels) + 1)
    params, in_channels = {}, 1
    for i, kernel in enumerate(cfg.conv_kernels):
        shape = (kernel, in_channels, cfg.conv_channels)
        params[f"conv_{i}"] = {"kernel": _conv_init(keys[i], shape, jnp.float32)}
        in_channels = cfg.conv_channels
    # One group per channel: a per-channel scale and shift after normalising over time.
    params["conv_0_group_norm"] = layers.layer_norm_init(cfg.conv_channels)
    params["layer_norm"] = layers.layer_norm_init(cfg.conv_channels)
    params["projection"] = layers.dense_init(keys[-1], cfg.conv_channels, cfg.encoder_width)
    if cfg.projection_init == "identity":
        if cfg.conv_channels != cfg.encoder_width:
            raise ValueError(
                f"projection_init='identity' needs conv_channels == encoder_width, not "
                f"{cfg.conv_channels} and {cfg.encoder_width}."
            )
        params["projection"]["kernel"] = jnp.eye(cfg.encoder_width, dtype=jnp.float32)
    elif cfg.projection_init != "normal":
        raise ValueError(
            f"projection_init={cfg.projection_init!r}: choose one of {PROJECTION_INITS}."
        )
    return params


def _group_norm_per_channel(
    params: dict, x_BxTxC: jax.Array, valid_B: jax.Array | None = None, eps: float = 1e-5
) -> jax.Array:
    """GroupNorm with groups == channels: each channel normalised over time, in float32.

    With `valid [batch]`, the statistics use only the first valid[b] steps (padding excluded).
    """
    y = layers.time_norm(x_BxTxC, valid_B, eps) * params["scale"] + params["bias"]
    return y.astype(x_BxTxC.dtype)


def apply(
    params: dict,
    audio_BxS: jax.Array,
    cfg: ml_collections.ConfigDict,
    *,
    lengths_B: jax.Array | None = None,
) -> jax.Array:
    """`audio [batch, samples]` (normalised crops) -> `[batch, frames, encoder_width]`.

    Positions are added here, so every later stage may gather frames and keep where they were.
    With `lengths [batch]` (real samples at the start of each crop, the rest padding), the
    GroupNorm after conv 0 takes its statistics from the real part only; frames past
    `valid_frames(lengths)` are then garbage that later stages must ignore.
    """
    dtype = jnp.dtype(cfg.dtype)
    conv0_valid_B = None if lengths_B is None else valid_frames(lengths_B, cfg, layers_used=1)
    x = audio_BxS.astype(dtype)[:, :, None]
    for i, stride in enumerate(cfg.conv_strides):
        with jax.named_scope(f"conv_{i}"):
            x = jax.lax.conv_general_dilated(
                x,
                params[f"conv_{i}"]["kernel"].astype(dtype),
                window_strides=(stride,),
                padding="VALID",
                dimension_numbers=("NWC", "WIO", "NWC"),
            )
            if i == 0:
                x = _group_norm_per_channel(params["conv_0_group_norm"], x, conv0_valid_B)
            x = layers.gelu(x, cfg.gelu)
    x = layers.layer_norm_apply(params["layer_norm"], x, eps=1e-5)
    x = layers.dense_apply(params["projection"], x)
    positions = layers.sincos_positions(x.shape[1], x.shape[2])
    return x + jnp.asarray(positions, dtype)[None]
