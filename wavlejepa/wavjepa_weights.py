"""WavJEPA's PyTorch encoder weights as our params: every tensor named, checked and re-laid out.

Pure numpy (the file is read by `import_wavjepa`). A state dict maps to the params of our
embedding path, `{"waveform_encoder", "context_encoder"}`, or raises one `WeightsError` line.
"""

import re

import jax
import ml_collections
import numpy as np

from wavlejepa import model_sizes
from wavlejepa.nets import layers

COMPILED = "_orig_mod."  # What torch.compile puts after a compiled module's name in its keys.
ANCHOR = "feature_norms.weight"  # One key every WavJEPA model holds once: it marks the root.
ENCODERS = {"student": "encoder", "teacher": "teacher_encoder"}  # `--from` -> key prefix.
# The parts of the model off the embedding path: left out on purpose, and reported.
LEFT_OUT = {
    "decoder.": "predictor",  # Self-attends over context and mask tokens; ours cross-attends.
    "decoder_to_encoder_mapper.": "predictor",
    "encoder_to_decoder_mapper.": "predictor",
    "mask_token": "predictor",
    "pos_encoding_decoder": "predictor",
}
# Per transformer layer (PyTorch's nn.TransformerEncoderLayer), in the order of our mapping.
_LAYER_KEYS = (
    "self_attn.in_proj_weight", "self_attn.in_proj_bias",
    "self_attn.out_proj.weight", "self_attn.out_proj.bias",
    "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
    "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
)  # fmt: skip
# The encoder form of WavJEPA's code: post-LN blocks, exact GELU, final LayerNorm eps 1e-5.
WAVJEPA_FORM = {"block_norm": "post", "gelu": "exact", "encoder_final_norm_eps": 1e-5}
HEAD_DIM = 64  # Heads are not in the tensors; WavJEPA's sizes (768/12, 1024/16) use 64 each.


class WeightsError(ValueError):
    """A state dict that is not WavJEPA's encoder as we can import it; names the key(s)."""


def _named(keys, prefix: str = "", limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(prefix + k for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def strip_compiled(state: dict) -> dict:
    """The state dict with torch.compile's `_orig_mod.` taken out of every key."""
    stripped = {}
    for key, value in state.items():
        plain = key.replace(COMPILED, "")
        if plain in stripped:
            raise WeightsError(f"{key} and another key both read {plain} without {COMPILED!r}.")
        stripped[plain] = value
    return stripped


def root_prefix(keys) -> str:
    """The common prefix of the model's keys ("" in a training checkpoint; the hub's code may
    add one), found where `feature_norms.weight` is."""
    roots = sorted(
        key[: -len(ANCHOR)] for key in keys if key == ANCHOR or key.endswith("." + ANCHOR)
    )
    if not roots:
        raise WeightsError(
            f"no WavJEPA encoder: no key ends in {ANCHOR!r} (the file's keys: {_named(keys)})."
        )
    if len(roots) > 1:
        raise WeightsError(f"several WavJEPA models in one file, under {_named(roots)}.")
    return roots[0]


def _expected_shapes(encoder: str, sizes: dict) -> dict:
    """Every key of the embedding path (relative to the root) and its PyTorch shape."""
    c, w, f = sizes["conv_channels"], sizes["encoder_width"], sizes["encoder_mlp_dim"]
    shapes = {}
    for i, kernel in enumerate(model_sizes.CONV_KERNELS):
        shapes[f"extract_audio.cnn.{i}.0.weight"] = (c, 1 if i == 0 else c, kernel)
    shapes |= {"extract_audio.cnn.0.2.weight": (c,), "extract_audio.cnn.0.2.bias": (c,)}
    shapes |= {"feature_norms.weight": (c,), "feature_norms.bias": (c,)}
    if sizes["has_mapper"]:
        shapes |= {"post_extraction_mapper.weight": (w, c), "post_extraction_mapper.bias": (w,)}
    layer = dict(zip(_LAYER_KEYS, [(3 * w, w), (3 * w,), (w, w), (w,), (f, w), (f,), (w, f),
                                   (w,), (w,), (w,), (w,), (w,)], strict=True))  # fmt: skip
    for depth in range(sizes["encoder_depth"]):
        shapes |= {f"{encoder}.layers.{depth}.{k}": s for k, s in layer.items()}
    return shapes | {f"{encoder}.norm.weight": (w,), f"{encoder}.norm.bias": (w,)}


def _sizes(state: dict, encoder: str, prefix: str) -> dict:
    """The network's sizes, read from the tensors (each key checked where it is read)."""

    def shape(key: str) -> tuple:
        if key not in state:
            raise WeightsError(f"missing key {prefix}{key} (WavJEPA's encoder path needs it).")
        return np.shape(state[key])

    layer_ids = {int(m[1]) for k in state if (m := re.match(rf"{encoder}\.layers\.(\d+)\.", k))}
    if not layer_ids:
        raise WeightsError(f"no {prefix}{encoder}.layers.* in the file: it holds no {encoder}.")
    conv_channels = shape("extract_audio.cnn.0.0.weight")[0]
    width = shape(f"{encoder}.layers.0.norm1.weight")[0]
    return {
        "conv_channels": conv_channels,
        "encoder_width": width,
        "encoder_depth": max(layer_ids) + 1,
        "encoder_mlp_dim": shape(f"{encoder}.layers.0.linear1.weight")[0],
        # WavJEPA builds its 512 -> 768 Linear only where the widths differ; else none.
        "has_mapper": conv_channels != width or "post_extraction_mapper.weight" in state,
    }


def _check_positions(table, width: int, key: str) -> None:
    """WavJEPA stores its fixed sin-cos table; ours is computed, so it must be the same one."""
    table = np.asarray(table, np.float32).reshape(-1, width)
    if not np.allclose(table, layers.sincos_positions(len(table), width), atol=1e-5):
        raise WeightsError(f"{key} is not the fixed sin-cos table our encoder adds; not imported.")


def to_params(state: dict, *, source: str = "student") -> tuple[dict, dict, dict]:
    """Our embedding path's params from WavJEPA's state dict.

    Args:
      state: key -> array, as a training checkpoint's "state_dict" (`_orig_mod.` allowed) or a
        hub copy's tensors (all keys under one common prefix).
      source: "student" (`encoder.*`, what WavJEPA's HEAR runtime embeds with) or "teacher"
        (the EMA copy, `teacher_encoder.*`).
    Returns:
      (params, sizes, left_out): float32 `{"waveform_encoder", "context_encoder"}`; the sizes
      read from the tensors; {part not taken: number of tensors}.
    Raises:
      WeightsError: a key missing, of another shape or unexpected, each named.
    """
    if source not in ENCODERS:
        raise WeightsError(f"source={source!r}: choose one of {sorted(ENCODERS)}.")
    state = strip_compiled(state)
    prefix = root_prefix(state)
    if outside := [k for k in state if not k.startswith(prefix)]:
        raise WeightsError(f"keys outside the model's prefix {prefix!r}: {_named(outside)}.")
    state = {k[len(prefix) :]: v for k, v in state.items()}
    encoder = ENCODERS[source]
    sizes = _sizes(state, encoder, prefix)
    expected = _expected_shapes(encoder, sizes)
    other = next(e for s, e in ENCODERS.items() if s != source)
    left_out = dict.fromkeys(["predictor", f"{other} (the {_other_name(source)})"], 0)
    unexpected = []
    for key in state:
        if key in expected:
            continue
        if key == "pos_encoding_encoder":
            _check_positions(state[key], sizes["encoder_width"], prefix + key)
        elif part := next((p for k, p in LEFT_OUT.items() if key.startswith(k)), None):
            left_out[part] += 1
        elif key.startswith(other + "."):
            left_out[f"{other} (the {_other_name(source)})"] += 1
        else:
            unexpected.append(key)
    missing = [k for k in expected if k not in state]
    problems = [f"missing key(s) {_named(missing, prefix)}"] if missing else []
    problems += [f"unexpected key(s) {_named(unexpected, prefix)}"] if unexpected else []
    if problems:
        raise WeightsError(f"{'; '.join(problems)}; nothing imported.")
    read = {k: v for k, v in sizes.items() if k != "has_mapper"}
    for key, want in expected.items():
        if tuple(np.shape(state[key])) != want:
            raise WeightsError(
                f"{prefix}{key} has shape {list(np.shape(state[key]))}, {list(want)} expected "
                f"for a WavJEPA encoder of sizes {read}."
            )
    params = _mapped({k: np.asarray(state[k], np.float32) for k in expected}, encoder, sizes)
    return params, read, {part: n for part, n in left_out.items() if n}


def _other_name(source: str) -> str:
    return "student" if source == "teacher" else "EMA teacher"


def _dense(weight: np.ndarray, bias: np.ndarray) -> dict:
    """PyTorch's Linear keeps [out, in]; our kernels are [in, out]."""
    return {"kernel": weight.T.copy(), "bias": bias}


def _norm(state: dict, name: str) -> dict:
    return {"scale": state[f"{name}.weight"], "bias": state[f"{name}.bias"]}


def _block(state: dict, name: str, width: int) -> dict:
    """One nn.TransformerEncoderLayer as our block; q, k, v are fused in `in_proj` there."""
    in_w, in_b = state[f"{name}.self_attn.in_proj_weight"], state[f"{name}.self_attn.in_proj_bias"]
    qkv = {
        part: _dense(in_w[i * width : (i + 1) * width], in_b[i * width : (i + 1) * width])
        for i, part in enumerate(("query", "key", "value"))
    }
    out = _dense(
        state[f"{name}.self_attn.out_proj.weight"], state[f"{name}.self_attn.out_proj.bias"]
    )
    return {
        "self_attention_norm": _norm(state, f"{name}.norm1"),
        "self_attention": qkv | {"out": out},
        "mlp_norm": _norm(state, f"{name}.norm2"),
        "mlp": {
            "hidden": _dense(state[f"{name}.linear1.weight"], state[f"{name}.linear1.bias"]),
            "out": _dense(state[f"{name}.linear2.weight"], state[f"{name}.linear2.bias"]),
        },
    }


def _mapped(state: dict, encoder: str, sizes: dict) -> dict:
    waveform = {
        # PyTorch's Conv1d weight is [out, in, kernel]; ours is [kernel, in, out] ("WIO").
        f"conv_{i}": {"kernel": state[f"extract_audio.cnn.{i}.0.weight"].transpose(2, 1, 0).copy()}
        for i in range(len(model_sizes.CONV_KERNELS))
    }
    waveform["conv_0_group_norm"] = _norm(state, "extract_audio.cnn.0.2")
    waveform["layer_norm"] = _norm(state, "feature_norms")
    if sizes["has_mapper"]:
        weight, bias = state["post_extraction_mapper.weight"], state["post_extraction_mapper.bias"]
    else:  # No Linear there: ours, which always has one, is the identity.
        width = sizes["encoder_width"]
        weight, bias = np.eye(width, dtype=np.float32), np.zeros(width, np.float32)
    waveform["projection"] = _dense(weight, bias)
    blocks = [
        _block(state, f"{encoder}.layers.{i}", sizes["encoder_width"])
        for i in range(sizes["encoder_depth"])
    ]
    # Our blocks are stacked on a leading axis (transformer.stack_init).
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
    return {
        "waveform_encoder": waveform,
        "context_encoder": {"blocks": stacked, "final_norm": _norm(state, f"{encoder}.norm")},
    }


def model_config(sizes: dict, num_heads: int | None = None) -> ml_collections.ConfigDict:
    """`config.model` of the imported encoder: WavJEPA's form and the sizes read from its
    tensors; the predictor and projector (trained afresh by `init_from`) from the size table's
    row of the same encoder width, else `base`'s."""
    width = sizes["encoder_width"]
    rows = [name for name, r in model_sizes.SIZES.items() if r["encoder_width"] == width]
    row = rows[0] if rows else "base"
    if num_heads is None:
        num_heads = model_sizes.SIZES[row]["encoder_heads"] if rows else max(1, width // HEAD_DIM)
    if num_heads < 1 or width % num_heads:
        raise WeightsError(
            f"{num_heads} heads do not divide the encoder width {width}: give --num_heads "
            "(the heads WavJEPA's model was built with; the tensors do not record them)."
        )
    cfg = model_sizes.model_config(row)
    cfg.update(sizes)
    cfg.encoder_heads = num_heads
    cfg.update(WAVJEPA_FORM)
    return cfg
