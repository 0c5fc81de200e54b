"""Importing WavJEPA's PyTorch weights: parity with the official code, every key checked, the
model folder loaded by our tools, and training continued from it (`config.init_from`).

tests/data/wavjepa_tiny.npz comes from research/wavjepa_reference.py: the official model at our
tiny size with every tensor perturbed, its state dict as a training checkpoint holds it
(`_orig_mod.` keys), a 2.01 s real recording and the official frame embeddings of it (student
and EMA teacher). tests/data/wavjepa_base_keys.json: the base model's keys and shapes.
"""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
import test_train_runner as runner
from cli_helpers import assert_refused, run_module
from safetensors.numpy import save_file

from wavlejepa import checkpointing, hear, model, pretrained, train_state, wavjepa_weights
from wavlejepa.embedding import Embedder
from wavlejepa.nets import layers

DATA = os.path.join(os.path.dirname(__file__), "data")
# The official code's float32 output against ours: the same math in another order.
TOLERANCE = 2e-5


def _load_fixture(name):
    with np.load(os.path.join(DATA, name)) as z:
        data = {k: z[k] for k in z.files}
    state = {k.removeprefix("state_dict/"): v for k, v in data.items() if k.startswith("state_")}
    return state, data


@pytest.fixture(scope="module")
def fixture():
    return _load_fixture("wavjepa_tiny.npz")


@pytest.fixture(scope="module")
def imported(fixture, tmp_path_factory):
    """The fixture through the command line, from a hub-style safetensors (keys under a prefix)."""
    state, _ = fixture
    folder = tmp_path_factory.mktemp("import")
    weights = folder / "model.safetensors"
    save_file({f"model.{k}": v for k, v in state.items()}, str(weights))
    result = run_module(
        "wavlejepa.import_wavjepa", f"--checkpoint={weights}", f"--output={folder / 'model'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "model", result.stdout


# wavjepa_tiny_conv64: conv width = encoder width, where WavJEPA has no post_extraction_mapper.
@pytest.mark.parametrize("name", ["wavjepa_tiny.npz", "wavjepa_tiny_conv64.npz"])
@pytest.mark.parametrize("source, reference", [("student", "embeddings"),
                                               ("teacher", "teacher_embeddings")])  # fmt: skip
def test_mapped_weights_give_the_official_embeddings(name, source, reference):
    state, data = _load_fixture(name)
    assert any("_orig_mod." in k for k in state)  # As a compiled training run saves them.
    has_mapper = "post_extraction_mapper.weight" in state
    assert has_mapper == (name == "wavjepa_tiny.npz")
    params, sizes, left_out = wavjepa_weights.to_params(state, source=source)
    cfg = wavjepa_weights.model_config(sizes, int(data["num_heads"]))
    frames = model.embed(params, data["audio_normalised"][None], cfg)[0]
    chex.assert_shape(frames, data[reference].shape)
    np.testing.assert_allclose(frames, data[reference], atol=TOLERANCE)
    other = "embeddings" if reference == "teacher_embeddings" else "teacher_embeddings"
    assert np.abs(np.asarray(frames) - data[other]).max() > 100 * TOLERANCE
    assert left_out["predictor"] > 0 and len(left_out) == 2


def test_the_official_form_matters(fixture):
    # Our default form (pre-LN, tanh GELU) on the same weights is another network.
    state, data = fixture
    params, sizes, _ = wavjepa_weights.to_params(state)
    cfg = wavjepa_weights.model_config(sizes, int(data["num_heads"]))
    for key, ours in (("block_norm", "pre"), ("gelu", "tanh")):
        changed = cfg.copy_and_resolve_references()
        changed[key] = ours
        frames = np.asarray(model.embed(params, data["audio_normalised"][None], changed)[0])
        assert np.abs(frames - data["embeddings"]).max() > 10 * TOLERANCE, key


def test_the_folder_embeds_as_the_official_runtime(imported, fixture):
    folder, stdout = imported
    _, data = fixture
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] | wavjepa_weights.WAVJEPA_FORM == config["model"]
    assert config["model"]["encoder_width"] == 64 and config["model"]["encoder_heads"] == 4
    assert "Left out on purpose: the predictor" in stdout and "EMA teacher" in stdout
    embedder = Embedder.from_checkpoint(str(folder))
    # The raw recording, normalised by the Embedder as by WavJEPA's runtime: one 2.01 s window.
    out = embedder.embed_one(data["audio_raw"])
    np.testing.assert_allclose(out.frames, data["embeddings"], atol=TOLERANCE)
    params, _ = pretrained.load(str(folder))
    assert sorted(params) == sorted(model.EMBEDDING_NETWORKS)
    hear_model = hear.load_model(str(folder))
    frames, times = hear.get_timestamp_embeddings(data["audio_raw"][None], hear_model)
    np.testing.assert_allclose(frames[0], data["embeddings"], atol=TOLERANCE)
    np.testing.assert_allclose(times[0, :2], [7.5, 17.5])  # Frame centres, in ms.


def test_the_folder_serves_evaluate_and_embed(imported, tmp_path):
    folder, _ = imported
    result = run_module(
        "wavlejepa.evaluate", f"--checkpoint={folder}", "--eval=fsdd_digits", "--json"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert 0.0 <= json.loads(result.stdout.splitlines()[-1])["test_accuracy"] <= 1.0
    clip = os.path.join(os.path.dirname(model.__file__), "data", "samples", "fsdd")
    result = run_module(
        "wavlejepa.embed", f"--checkpoint={folder}", f"--input={clip}",
        f"--output={tmp_path / 'e.npz'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.load(tmp_path / "e.npz")["clip"].shape[1] == 64


def _without(state, key):
    return {k: v for k, v in state.items() if k != key}


@pytest.mark.parametrize(
    "change, named",
    [
        ("missing", "missing key(s) encoder.layers.1.linear2.bias"),
        ("renamed", "unexpected key(s) encoder.layers.1.linear_2.bias"),
        ("reshaped", "encoder.layers.1.linear2.bias has shape [63], [64] expected"),
    ],
)
def test_a_bad_key_is_one_line_and_nothing_is_written(fixture, tmp_path, change, named):
    state, _ = fixture
    key = "encoder.layers.1.linear2.bias"
    state = _without(state, key)
    if change == "renamed":
        state["encoder.layers.1.linear_2.bias"] = np.zeros(64, np.float32)
    if change == "reshaped":
        state[key] = np.zeros(63, np.float32)
    weights = tmp_path / "model.safetensors"
    save_file(state, str(weights))
    before = sorted(os.listdir(tmp_path))
    result = run_module(
        "wavlejepa.import_wavjepa", f"--checkpoint={weights}", f"--output={tmp_path / 'out'}"
    )
    assert_refused(result, named, "--checkpoint=")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_a_mapper_missing_where_the_widths_differ_is_named(fixture):
    state, _ = fixture
    with pytest.raises(wavjepa_weights.WeightsError, match="missing key.* post_extraction_mapper"):
        wavjepa_weights.to_params(_without(state, "post_extraction_mapper.weight"))


def test_the_base_key_set_maps_onto_our_base_encoder():
    with open(os.path.join(DATA, "wavjepa_base_keys.json")) as f:
        shapes = json.load(f)
    # Zeros that take no memory; the one table whose values are checked is the real one.
    state = {k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}
    state["pos_encoding_encoder"] = layers.sincos_positions(200, 768)[None]
    params, sizes, left_out = wavjepa_weights.to_params(state)
    assert sizes == {"conv_channels": 512, "encoder_width": 768, "encoder_depth": 12,
                     "encoder_mlp_dim": 3072}  # fmt: skip
    cfg = wavjepa_weights.model_config(sizes)
    assert cfg.size == "base" and cfg.encoder_heads == 12
    expected = jax.eval_shape(lambda k: model.init(k, cfg), jax.random.PRNGKey(0))
    chex.assert_trees_all_equal_shapes_and_dtypes(
        params, {name: expected[name] for name in model.EMBEDDING_NETWORKS}
    )
    mapped = sum(np.size(x) for x in jax.tree.leaves(params))
    taken = sum(np.prod(s) for k, s in shapes.items() if k.startswith(("extract", "feature",
                "post_extraction", "encoder.")))  # fmt: skip
    assert mapped == taken  # Every tensor of the path, and nothing else.
    assert left_out == {"predictor": 152, "teacher_encoder (the EMA teacher)": 146}
    state["pos_encoding_encoder"] = state["pos_encoding_encoder"] + 0.1
    with pytest.raises(wavjepa_weights.WeightsError, match="not the fixed sin-cos table"):
        wavjepa_weights.to_params(state)


def test_create_starts_from_the_given_encoder(fixture):
    state, data = fixture
    params, sizes, _ = wavjepa_weights.to_params(state)
    config = _tiny_config(wavjepa_weights.model_config(sizes, int(data["num_heads"])))
    fresh = train_state.create(jax.random.PRNGKey(0), config, params)
    chex.assert_trees_all_equal({k: fresh.params[k] for k in model.EMBEDDING_NETWORKS}, params)
    plain = train_state.create(jax.random.PRNGKey(0), config)
    chex.assert_trees_all_equal(fresh.params["predictor"], plain.params["predictor"])


def _tiny_config(model_cfg):
    from configs import cpu_debug

    config = cpu_debug.get_config()
    config.model = model_cfg
    return config


def _form_flags():
    return [f"--config.model.{k}={v}" for k, v in wavjepa_weights.WAVJEPA_FORM.items()]


def test_init_from_trains_and_resumes_exactly(imported, tmp_path, tmp_path_factory):
    folder, _ = imported
    env = runner.subprocess_env(tmp_path_factory.getbasetemp() / "jax_cache")
    # Warm-up from 0: step 0's update is zero, so step 1's checkpoint holds the start params.
    common = runner.DEBUG + _form_flags() + [
        f"--config.init_from={folder}", "--config.optimizer.warmup_steps=2",
        "--config.checkpoint_every_steps=1", "--config.eval_every_steps=100",
        "--config.keep_checkpoints=10", "--config.evals={}",
    ]  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    runner.run(common + [f"--workdir={straight}", "--config.total_steps=4"], env,
               tmp_path / "straight.log", main_module=True)  # fmt: skip
    log = runner.run(common + [f"--workdir={split}", "--config.total_steps=2"], env,
                     tmp_path / "first.log", main_module=True)  # fmt: skip
    assert "Starting from the encoder of" in log
    runner.run(common + [f"--workdir={split}", "--config.total_steps=4"], env,
               tmp_path / "resumed.log", main_module=True)  # fmt: skip

    start, _ = pretrained.load(str(folder))
    first, _ = pretrained.load(str(straight / "checkpoints"), 1)
    chex.assert_trees_all_equal({k: first[k] for k in model.EMBEDDING_NETWORKS}, start)
    a, _ = pretrained.load(str(straight / "checkpoints"), 4)
    b, _ = pretrained.load(str(split / "checkpoints"), 4)
    chex.assert_trees_all_equal(a, b)
    moved = jax.tree.map(
        lambda x, y: np.abs(x - y).max(), a["context_encoder"], start["context_encoder"]
    )
    assert max(jax.tree.leaves(moved)) > 0  # It trained.


def test_init_from_another_encoder_is_one_line_before_any_write(imported, tmp_path):
    folder, _ = imported
    workdir = tmp_path / "run"
    result = run_module(
        "wavlejepa.main", *runner.DEBUG, f"--workdir={workdir}", f"--config.init_from={folder}"
    )
    assert_refused(result, "holds another encoder", "model.block_norm='post' there, 'pre' here")
    assert not workdir.exists()
    assert checkpointing.LATEST_DIR not in os.listdir(folder)


def test_a_torch_file_without_torch_is_one_line_naming_the_extra(tmp_path):
    weights = tmp_path / "wavjepa.ckpt"
    weights.write_bytes(b"not read")
    code = (
        "import runpy, sys; sys.modules['torch'] = None; "  # Makes `import torch` fail.
        f"sys.argv = ['import_wavjepa', '--checkpoint={weights}', '--output={tmp_path / 'out'}']; "
        "runpy.run_module('wavlejepa.import_wavjepa', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False,
        cwd=runner.REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert_refused(result, "needs torch", 'pip install -e ".[wavjepa]"', "safetensors")
    assert not (tmp_path / "out").exists()


def test_a_training_checkpoint_is_read_with_torch(fixture, tmp_path):
    torch = pytest.importorskip("torch")  # An optional extra: CI has no torch.
    state, data = fixture
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    plain, lightning = tmp_path / "plain.ckpt", tmp_path / "lightning.ckpt"
    torch.save({"state_dict": tensors, "global_step": 0}, plain)
    torch.save(tensors, tmp_path / "pytorch_model.bin")  # A bare state dict, as the hub's.
    # Lightning also pickles the hyper-parameters, here a module object as WavJEPA's holds.
    torch.save({"state_dict": tensors, "hyper_parameters": {"act": torch.nn.GELU()}}, lightning)
    result = run_module(
        "wavlejepa.import_wavjepa", f"--checkpoint={plain}", f"--output={tmp_path / 'a'}",
        "--from=teacher",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    frames = Embedder.from_checkpoint(str(tmp_path / "a")).embed_one(data["audio_raw"]).frames
    np.testing.assert_allclose(frames, data["teacher_embeddings"], atol=TOLERANCE)
    bare = tmp_path / "pytorch_model.bin"
    result = run_module(
        "wavlejepa.import_wavjepa", f"--checkpoint={bare}", f"--output={tmp_path / 'c'}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    frames = Embedder.from_checkpoint(str(tmp_path / "c")).embed_one(data["audio_raw"]).frames
    np.testing.assert_allclose(frames, data["embeddings"], atol=TOLERANCE)
    out = tmp_path / "b"
    result = run_module("wavlejepa.import_wavjepa", f"--checkpoint={lightning}", f"--output={out}")
    assert_refused(result, "holds Python objects besides tensors", "--trust_pickle")
    assert not out.exists()
    result = run_module(
        "wavlejepa.import_wavjepa", f"--checkpoint={lightning}", f"--output={out}",
        "--trust_pickle",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
