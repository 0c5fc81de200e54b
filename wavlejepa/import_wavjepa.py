r"""Imports WavJEPA's PyTorch encoder weights as a model folder every tool of ours loads.

  python -m wavlejepa.import_wavjepa --checkpoint=wavjepa.ckpt --output=/tmp/wavjepa_base
  python -m wavlejepa.import_wavjepa --checkpoint=model.safetensors --output=/tmp/wavjepa_base

--checkpoint is a training checkpoint of the official code (the file its HEAR runtime loads:
a torch file whose "state_dict" holds the model), a `pytorch_model.bin`, or a hub copy's
`model.safetensors` (read with the safetensors package alone; keys may sit under one common
prefix). Every tensor of the encoder path (conv front end, its norms and projection, the
transformer blocks and final norm) is mapped with its shape checked; a missing, unexpected or
misshapen key is one error line naming it, and nothing is written. The predictor and the other
encoder (the EMA teacher by default, --from=teacher takes it instead) are left out and
reported. --output gets `config.json` (WavJEPA's exact encoder: post-LN blocks, exact GELU,
final-norm eps 1e-5, sizes read from the tensors) and `best/0/`: `Embedder.from_checkpoint`,
the HEAR API, `embed`, `evaluate` and `--config.init_from` all take the folder as it is.

Torch files need torch (`pip install -e ".[wavjepa]"`); safetensors files need only safetensors.
"""

import os
import pickle

from absl import app, flags

from wavlejepa import cli, flag_kinds, runtime

# JAX, torch and the model are imported in main(), after the flags: `--help` is instant.
_CHECKPOINT = flag_kinds.define_input(
    "checkpoint", None,
    "WavJEPA's weights: a training checkpoint (.ckpt/.pt), a pytorch_model.bin, or a "
    "model.safetensors.",
    kind="file", required=True,
)  # fmt: skip
_OUTPUT = flag_kinds.define_output(
    "output", None, "The model folder to write (new, or empty).", kind="folder", required=True
)
_FROM = flags.DEFINE_enum(
    "from",
    "student",
    ["student", "teacher"],
    "Which encoder: the student (`encoder.*`, what WavJEPA's HEAR runtime embeds with) or its "
    "EMA teacher (`teacher_encoder.*`).",
)
_NUM_HEADS = flag_kinds.define_number(
    "num_heads", None,
    "Attention heads of the encoder (the tensors do not record them). Default: the size "
    "table's row of the same width (12 at 768), else width / 64.",
    low=1, high=1024, unit="heads",
)  # fmt: skip
_TRUST_PICKLE = flags.DEFINE_bool(
    "trust_pickle",
    False,
    "Unpickle Python objects besides tensors in a torch file (a Lightning checkpoint's "
    "hyper-parameters). Runs code from the file: only for files from a source you trust.",
)
_EXTRA = 'pip install -e ".[wavjepa]"'
_WHY_LEFT_OUT = {
    "predictor": "its blocks self-attend over context and mask tokens, ours cross-attend; "
    "--config.init_from trains a new one"
}


def _read_safetensors(path: str) -> dict:
    from wavlejepa.checkpointing import one_line

    try:
        from safetensors.numpy import load_file
    except ImportError:
        cli.fail(f"reading {path} needs the safetensors package: {_EXTRA}.")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for a bad header.
        cli.fail(f"--checkpoint={path} is not a readable safetensors file ({one_line(e)}).")


def _read_torch(path: str, trust_pickle: bool) -> dict:
    """The state dict of a torch file as float32 numpy arrays."""
    from wavlejepa.checkpointing import one_line

    try:
        import torch
    except ImportError:
        cli.fail(
            f"reading {path} needs torch: {_EXTRA} (or torch's CPU build). A model.safetensors "
            "copy of the weights needs only the safetensors package."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        if trust_pickle:
            cli.fail(f"--checkpoint={path}: torch cannot unpickle it ({one_line(e)}).")
        cli.fail(
            f"--checkpoint={path} holds Python objects besides tensors ({one_line(e)}); "
            "unpickling them runs code from the file: add --trust_pickle if you trust its source."
        )
    except Exception as e:  # torch raises RuntimeError, EOFError, zipfile errors, ...
        cli.fail(f"--checkpoint={path} is not a file torch can read ({one_line(e)}).")
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        cli.fail(
            f"--checkpoint={path} holds no state dict (neither a dict of tensors nor one under "
            '"state_dict"): give the checkpoint WavJEPA\'s training wrote.'
        )
    return {key: value.detach().to(torch.float32).numpy() for key, value in state.items()}


def _check_flags() -> tuple[str, str]:
    checkpoint = os.path.abspath(_CHECKPOINT.value)  # Its kind checked it is a file.
    output = os.path.abspath(_OUTPUT.value)
    if os.path.exists(output) and (not os.path.isdir(output) or os.listdir(output)):
        cli.fail(
            f"--output={_OUTPUT.value} exists and is not an empty folder: give a new folder, so "
            "no earlier model is overwritten."
        )
    return checkpoint, output


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runtime.set_up()
    checkpoint, output = _check_flags()
    if checkpoint.endswith(".safetensors"):
        state = _read_safetensors(checkpoint)
    else:
        state = _read_torch(checkpoint, _TRUST_PICKLE.value)

    import jax

    from configs import default
    from wavlejepa import checkpointing, wavjepa_weights

    try:
        params, sizes, left_out = wavjepa_weights.to_params(state, source=_FROM.value)
        model_cfg = wavjepa_weights.model_config(sizes, _NUM_HEADS.value)
    except wavjepa_weights.WeightsError as e:
        cli.fail(f"--checkpoint={_CHECKPOINT.value}: {e}")
    config = default.get_config()
    config.model = model_cfg
    # Written beside the target and renamed into place: a failure leaves no half a model.
    staging = f"{output}.importing-{os.getpid()}"
    with cli.outputs(staging):
        checkpointing.save_model(staging, params, config)
        if os.path.isdir(output):
            os.rmdir(output)  # Checked empty above.
        os.rename(staging, output)

    taken = sum(x.size for x in jax.tree.leaves(params))
    print(
        f"Imported WavJEPA's {_FROM.value} encoder (conv {sizes['conv_channels']}, encoder "
        f"{sizes['encoder_depth']}x{sizes['encoder_width']}, {model_cfg.encoder_heads} heads, "
        f"MLP {sizes['encoder_mlp_dim']}; post-LN, exact GELU; {taken / 1e6:.2f} M params) "
        f"from {_CHECKPOINT.value} into {_OUTPUT.value}."
    )
    for part, count in left_out.items():
        why = _WHY_LEFT_OUT.get(part, "--from takes it instead")
        print(f"Left out on purpose: the {part}, {count} tensors ({why}).")
    print(
        f"Use it: python -m wavlejepa.embed --checkpoint={_OUTPUT.value} --input=...; train on "
        f"from it: --config={_OUTPUT.value}/config.json --config.init_from={_OUTPUT.value}"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
