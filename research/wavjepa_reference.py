"""Reference weights and embeddings of the official PyTorch WavJEPA, for testing our importer.

Runs in a torch venv (no JAX here): builds their model from their source, perturbs every learned
tensor, embeds 2.01 s of FSDD speech as their HEAR runtime does, saves under their checkpoint keys.

Regenerate the committed files and the base checkpoint (from the repo root; TORCH_VENV has torch,
numpy, scipy, soundfile, einops; PEER_SRC is labhamlet/wavjepa extracted):

  TORCH_VENV/bin/python research/wavjepa_reference.py --src PEER_SRC --preset tiny \
      --audio_dir ../shared/data/fsdd/recordings --fixture tests/data/wavjepa_tiny.npz
  TORCH_VENV/bin/python research/wavjepa_reference.py --src PEER_SRC --preset tiny-conv64 \
      --audio_dir ../shared/data/fsdd/recordings --fixture tests/data/wavjepa_tiny_conv64.npz
  TORCH_VENV/bin/python research/wavjepa_reference.py --src PEER_SRC --preset base \
      --audio_dir ../shared/data/fsdd/recordings --keys_json tests/data/wavjepa_base_keys.json \
      --checkpoint /tmp/wavjepa_base_perturbed.ckpt --reference /tmp/wavjepa_base_reference.npz
"""

import argparse
import importlib.util
import json
import os
import sys
import types

import numpy as np
import scipy.signal
import soundfile as sf
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Rows of our size table (wavlejepa/model_sizes.py), spelled as their constructors take them.
PRESETS = {
    "tiny": dict(conv=32, enc_layers=2, enc_width=64, enc_heads=4, enc_mlp=256,
                 pred_layers=1, pred_width=32, pred_heads=4, pred_mlp=128),
    # The tiny size with conv width = encoder width: the path without a post_extraction_mapper.
    "tiny-conv64": dict(conv=64, enc_layers=2, enc_width=64, enc_heads=4, enc_mlp=256,
                        pred_layers=1, pred_width=32, pred_heads=4, pred_mlp=128),
    "base": dict(conv=512, enc_layers=12, enc_width=768, enc_heads=12, enc_mlp=3072,
                 pred_layers=12, pred_width=384, pred_heads=12, pred_mlp=1536),
    # The peer-learning runs' size (`small-conv256`): conv width = encoder width, so WavJEPA
    # builds no post_extraction_mapper.
    "small-conv256": dict(conv=256, enc_layers=4, enc_width=256, enc_heads=4, enc_mlp=1024,
                          pred_layers=2, pred_width=128, pred_heads=4, pred_mlp=512),
}  # fmt: skip

SAMPLE_RATE = 16_000
PROCESS_SECONDS = 2.01  # hear_configs/WavJEPA.py
NUM_SAMPLES = int(SAMPLE_RATE * PROCESS_SECONDS)  # 32159: their int() truncates 32159.99...
FIXED_TABLES = ("pos_encoding_encoder", "pos_encoding_decoder")  # sin-cos, never trained
# Their trainer compiles with `compile_modules=True`; `_compile_operations` wraps only
# `extract_audio` as a module (the encoder/decoder get compiled *methods*), so only its
# state-dict keys carry `_orig_mod.`. `check_compiled_key_names` confirms it on their code.
COMPILED_MODULES = ("extract_audio",)


def import_peer(src: str, bench: str) -> None:
    """Makes their `wavjepa` model modules importable without Lightning or transformers."""
    spec = importlib.util.spec_from_file_location("bench_peer", bench)
    bench_peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_peer)
    bench_peer.install_stubs()
    src = os.path.abspath(src)
    sys.path.insert(0, src)
    # As bench_peer's main(): a bare package, so wavjepa/__init__.py (the WavJEPA-Nat denoiser,
    # which needs torchaudio and their data pipeline) is never executed.
    pkg = types.ModuleType("wavjepa")
    pkg.__path__ = [os.path.join(src, "wavjepa")]
    pkg.__package__ = "wavjepa"
    sys.modules["wavjepa"] = pkg


def build(preset: dict, seed: int, compile_modules: bool = False) -> torch.nn.Module:
    """Their JEPA as hear_api/runtime.py builds it, with our preset's sizes, in eval mode."""
    from wavjepa.extractors import ConvFeatureExtractor
    from wavjepa.jepa import JEPA
    from wavjepa.types import TransformerEncoderCFG, TransformerLayerCFG

    torch.manual_seed(seed)
    c = preset["conv"]
    extractor = ConvFeatureExtractor(
        conv_layers_spec=[(c, 10, 5)] + [(c, 3, 2)] * 4 + [(c, 2, 2)], in_channels=1
    )
    layer = TransformerLayerCFG.create
    model = JEPA(
        feature_extractor=extractor,
        transformer_encoder_cfg=TransformerEncoderCFG.create(num_layers=preset["enc_layers"]),
        transformer_encoder_layers_cfg=layer(
            d_model=preset["enc_width"],
            nhead=preset["enc_heads"],
            mlp_ratio=preset["enc_mlp"] / preset["enc_width"],
        ),
        transformer_decoder_cfg=TransformerEncoderCFG.create(num_layers=preset["pred_layers"]),
        transformer_decoder_layers_cfg=layer(
            d_model=preset["pred_width"],
            nhead=preset["pred_heads"],
            mlp_ratio=preset["pred_mlp"] / preset["pred_width"],
        ),
        resample_sr=SAMPLE_RATE,
        process_audio_seconds=PROCESS_SECONDS,
        compile_modules=compile_modules,
    )
    return model.eval()


def perturbed_state_dict(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Every learned tensor moved off its init with seeded noise; the sin-cos tables kept.

    Init values hide import bugs: a LayerNorm left at 1/0 or a zero bias reads the same from any
    key. The EMA teacher draws its own noise, so mixing it up with the student shows too. Values
    are rounded to bfloat16's grid (kept float32): the tiny fixture then compresses to about half.
    """
    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm)
    norm_keys = {
        f"{name}.{leaf}"
        for name, module in model.named_modules()
        if isinstance(module, norms)
        for leaf in ("weight", "bias")
    }
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, init in model.state_dict().items():
        if key in FIXED_TABLES:
            out[key] = init.clone()
            continue
        noise = torch.randn(init.shape, generator=gen)
        if key in norm_keys:
            out[key] = (1.0 if key.endswith(".weight") else 0.0) + 0.1 * noise
        else:
            std = float(init.std()) if init.numel() > 1 else 0.0
            out[key] = init + (0.1 * std if std > 0 else 0.05) * noise
        out[key] = out[key].bfloat16().float()
    return out


def checkpoint_key(key: str) -> str:
    """`extract_audio.cnn...` -> `extract_audio._orig_mod.cnn...`, as torch.compile names it."""
    module = key.split(".")[0]
    return key.replace(".", "._orig_mod.", 1) if module in COMPILED_MODULES else key


def runtime_key(key: str) -> str:
    """hear_api/runtime.py's renaming of a checkpoint key back to the module's key."""
    for module in ("extract_audio", "encoder", "decoder"):
        if key.startswith(f"{module}._orig_mod"):
            return key.replace(f"{module}._orig_mod", module)
    return key


def check_compiled_key_names(preset: dict, seed: int, names: list[str]) -> None:
    """Their model built with `compile_modules=True` names its state dict as `names` does."""
    compiled = build(preset, seed, compile_modules=True)
    assert list(compiled.state_dict()) == names, "COMPILED_MODULES disagrees with their code"


def load_speaker(audio_dir: str, speaker: str) -> tuple[np.ndarray, list[str]]:
    """The first NUM_SAMPLES of the speaker's clips in name order, 8 -> 16 kHz, float32."""
    # FSDD names its clips DIGIT_SPEAKER_TAKE.wav.
    names = sorted(n for n in os.listdir(audio_dir) if n.split("_")[1:2] == [speaker])
    pieces, used = [], []
    for name in names:
        x, sr = sf.read(os.path.join(audio_dir, name), dtype="float32")
        assert sr == 8000, (name, sr)
        pieces.append(scipy.signal.resample_poly(x, 2, 1).astype(np.float32))
        used.append(name)
        if sum(map(len, pieces)) >= NUM_SAMPLES:
            return np.concatenate(pieces)[:NUM_SAMPLES], used
    raise ValueError(f"{speaker!r} has under {NUM_SAMPLES} samples in {audio_dir}")


def hear_normalise(audio_N: torch.Tensor) -> torch.Tensor:
    """[N] -> [1, 1, N]: hear_api/feature_helper.normalize_audio, then runtime.normalize."""
    x = audio_N[None]  # [1, N]: the mono clip as their FeatureExtractor holds it
    rms = torch.sqrt(torch.mean(x**2))
    gain_db = -14.0 - 20 * torch.log10(rms)
    x = (x * 10 ** (gain_db / 20))[None]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)  # unbiased, torch's default, as theirs
    return (x - mean) / (std + 1e-5)


def embed(model: torch.nn.Module, audio: torch.Tensor, *, teacher: bool = False) -> np.ndarray:
    """[1, 1, N] -> [frames, width] through their get_audio_representation (student or EMA).

    The mask is all False: their runtime pads a 2.01 s clip with a whole chunk of zeros, and the
    first chunk's 200 frames, the ones it returns, are all unpadded.
    """
    mask = torch.zeros(1, model.total_patches, dtype=torch.bool)
    student = model.encoder
    if teacher:
        model.encoder = model.teacher_encoder
    try:
        return model.get_audio_representation(audio, mask)[0].numpy()
    finally:
        model.encoder = student


def perturbed_model(preset: dict, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Their model with `perturbed_state_dict` loaded, checked tensor by tensor."""
    model = build(preset, seed)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    state = perturbed_state_dict(model, seed)
    model.load_state_dict(state, strict=True)
    for key, value in state.items():
        changed = not torch.equal(value, init[key])
        assert changed != (key in FIXED_TABLES), f"{key}: perturbed={changed}"
        if key.startswith("teacher_encoder."):
            assert not torch.equal(value, state[key.removeprefix("teacher_")]), key
    check_compiled_key_names(preset, seed, [checkpoint_key(k) for k in state])
    return model, state


def check_runtime_reload(preset, seed, saved, audio, outputs) -> None:
    """A fresh model loading `saved` as hear_api/runtime.py does gives the same embeddings.

    Strictly: every key of their model is in `saved` and nothing else is.
    """
    fresh = build(preset, seed + 1)
    fresh.load_state_dict({runtime_key(k): v for k, v in saved.items()}, strict=True)
    np.testing.assert_array_equal(embed(fresh, audio), outputs["embeddings"])
    np.testing.assert_array_equal(embed(fresh, audio, teacher=True), outputs["teacher_embeddings"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--src",
        default=os.environ.get("WAVJEPA_SRC"),
        help="extracted labhamlet/wavjepa source (or $WAVJEPA_SRC)",
    )
    ap.add_argument(
        "--bench",
        default=os.path.normpath(
            os.path.join(REPO_ROOT, "../shared/tools/peer-bench/bench_peer.py")
        ),
        help="bench_peer.py, whose import stubs this reuses",
    )
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--audio_dir", required=True, help="FSDD recordings (8 kHz wavs)")
    ap.add_argument("--speaker", default="george")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixture", help="npz: weights by checkpoint key, audio, embeddings")
    ap.add_argument("--checkpoint", help="torch file as their trainer saves it")
    ap.add_argument("--keys_json", help="JSON {checkpoint key: shape}")
    ap.add_argument("--reference", help="npz: audio and embeddings only, no weights")
    args = ap.parse_args()
    if not args.src:
        ap.error("--src (or $WAVJEPA_SRC) is required")
    import_peer(args.src, args.bench)
    preset = PRESETS[args.preset]

    model, state = perturbed_model(preset, args.seed)

    audio_raw, files = load_speaker(args.audio_dir, args.speaker)
    audio = hear_normalise(torch.from_numpy(audio_raw))
    outputs = {
        "audio_raw": audio_raw,
        "audio_normalised": audio[0, 0].numpy(),
        "embeddings": embed(model, audio),
        "teacher_embeddings": embed(model, audio, teacher=True),
    }
    assert outputs["embeddings"].shape == (model.total_patches, preset["enc_width"])

    saved = {checkpoint_key(k): v.detach().clone() for k, v in state.items()}
    if args.checkpoint:
        torch.save({"state_dict": saved, "epoch": 0, "global_step": 0}, args.checkpoint)
        saved = torch.load(args.checkpoint, weights_only=True)["state_dict"]
    check_runtime_reload(preset, args.seed, saved, audio, outputs)

    written = [p for p in (args.checkpoint,) if p]
    if args.fixture:
        weights = {f"state_dict/{k}": v.numpy().astype(np.float32) for k, v in saved.items()}
        heads = dict(num_heads=preset["enc_heads"], predictor_num_heads=preset["pred_heads"])
        np.savez_compressed(args.fixture, **weights, **outputs, **heads, files=np.array(files))
        written.append(args.fixture)
    if args.reference:
        np.savez_compressed(args.reference, **outputs, files=np.array(files))
        written.append(args.reference)
    if args.keys_json:
        lines = [f"  {json.dumps(k)}: {json.dumps(list(v.shape))}" for k, v in saved.items()]
        with open(args.keys_json, "w") as f:
            f.write("{\n" + ",\n".join(lines) + "\n}\n")
        written.append(args.keys_json)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"{args.preset}: {trainable:,} trainable parameters ({len(saved)} state-dict tensors); "
        f"max |embedding| student {np.abs(outputs['embeddings']).max():.4f}, "
        f"teacher {np.abs(outputs['teacher_embeddings']).max():.4f}; "
        f"audio from {files[0]}..{files[-1]} ({len(files)} files); "
        f"wrote {', '.join(written) or 'nothing'}"
    )


if __name__ == "__main__":
    main()
