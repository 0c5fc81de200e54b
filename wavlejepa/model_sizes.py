"""The one size table of the model: every config and test names a row, never repeats its numbers.

`base` is WavJEPA's published size (~111 M trainable parameters without the projector).
"""

import ml_collections

# Conv front end of WavJEPA (wav2vec 2.0 style): total stride 160 = 100 frames/s at 16 kHz,
# receptive field 240 samples (15 ms).
CONV_KERNELS = (10, 3, 3, 3, 3, 2)
CONV_STRIDES = (5, 2, 2, 2, 2, 2)

SIZES = {
    # name: (conv_channels, encoder width/depth/heads/mlp, predictor width/depth/heads/mlp,
    #        projector hidden dims, projector output dim)
    "tiny": dict(
        conv_channels=32,
        encoder_width=64, encoder_depth=2, encoder_heads=4, encoder_mlp_dim=256,
        predictor_width=32, predictor_depth=1, predictor_heads=4, predictor_mlp_dim=128,
        projector_hidden_dims=(128,), projector_dim=64,
    ),
    "small": dict(
        conv_channels=256,
        encoder_width=256, encoder_depth=4, encoder_heads=4, encoder_mlp_dim=1024,
        predictor_width=128, predictor_depth=2, predictor_heads=4, predictor_mlp_dim=512,
        projector_hidden_dims=(1024,), projector_dim=128,
    ),
    "base": dict(
        conv_channels=512,
        encoder_width=768, encoder_depth=12, encoder_heads=12, encoder_mlp_dim=3072,
        predictor_width=384, predictor_depth=12, predictor_heads=12, predictor_mlp_dim=1536,
        projector_hidden_dims=(2048, 2048), projector_dim=256,
    ),
}  # fmt: skip


def model_config(size: str) -> ml_collections.ConfigDict:
    """Returns `config.model` for a row of the size table (see configs/default.py for knobs)."""
    if size not in SIZES:
        raise ValueError(f"Unknown model size {size!r}; choose one of {sorted(SIZES)}.")
    cfg = ml_collections.ConfigDict()
    cfg.size = size  # The row: `--config.model.size=small` picks its numbers (see `resolve`).
    cfg.conv_kernels = CONV_KERNELS  # Kernel of each conv layer (samples, then frames).
    cfg.conv_strides = CONV_STRIDES  # Stride of each conv layer; product 160 -> 100 Hz.
    for name, value in SIZES[size].items():
        setattr(cfg, name, value)
    # The network's form. WavJEPA's own is "post", "exact", 1e-5 (what `import_wavjepa`
    # writes); every recipe in docs/experiments was measured with the form below.
    cfg.block_norm = "pre"  # Each block's LayerNorms: before each sublayer or after its add.
    cfg.gelu = "tanh"  # GELU everywhere: "tanh" approximation or "exact" (erf, torch's default).
    cfg.encoder_final_norm_eps = 1e-6  # The context encoder's last LayerNorm.
    # The conv -> encoder projection's init: "normal" or "identity" (WavJEPA's, which has no
    # projection where conv_channels == encoder_width). Init only: the network is the same.
    cfg.projection_init = "normal"
    cfg.dtype = "float32"  # Compute dtype; params stay float32. "bfloat16" on TPU/GPU.
    cfg.remat = False  # Rematerialise each transformer block in the backward pass (long crops).
    cfg.scan_layers = True  # lax.scan over blocks (one compiled block); False unrolls them.
    return cfg


# The form and init keys with the values every run had before they existed: a config saved then
# lacks them.
FORM_DEFAULTS = {"block_norm": "pre", "gelu": "tanh", "encoder_final_norm_eps": 1e-6,
                 "projection_init": "normal"}  # fmt: skip


def with_form_defaults(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config.model` with the form keys a config saved before they existed lacks, filled in."""
    missing = {k: v for k, v in FORM_DEFAULTS.items() if k not in cfg}
    if not missing:
        return cfg
    completed = ml_collections.ConfigDict(cfg.to_dict())
    completed.update(missing)
    return completed


def _row_of(cfg: ml_collections.ConfigDict) -> dict:
    return {k: tuple(cfg[k]) if isinstance(cfg[k], list | tuple) else cfg[k] for k in SIZES["tiny"]}


def resolve(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config.model` with `size` picking the numbers: when the size-table fields still hold a
    row's numbers (a config file's own) and `size` names another row, they become that row's.
    Fields changed by hand (matching no row) are kept as they are.

    Raises:
      ValueError: a size that is not in the table.
    """
    if cfg.size not in SIZES:
        raise ValueError(
            f"config.model.size={cfg.size!r}: choose one of {sorted(SIZES)} (the size table in "
            "wavlejepa/model_sizes.py)."
        )
    rows = [name for name, row in SIZES.items() if row == _row_of(cfg)]
    if not rows or cfg.size in rows:
        return cfg
    resolved = ml_collections.ConfigDict(cfg.to_dict())
    resolved.update(SIZES[cfg.size])
    return resolved


def describe(cfg: ml_collections.ConfigDict) -> str:
    """One line of what a model config really builds, e.g. for the training log."""
    label = cfg.size if _row_of(cfg) == SIZES.get(cfg.size) else f"{cfg.size}, changed by hand"
    return (
        f"{label}: conv {cfg.conv_channels}, encoder {cfg.encoder_depth}x{cfg.encoder_width}, "
        f"predictor {cfg.predictor_depth}x{cfg.predictor_width}, projector "
        f"{'-'.join(str(d) for d in cfg.projector_hidden_dims)}-{cfg.projector_dim}"
    )
