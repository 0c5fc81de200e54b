"""`--config` mistakes end in one line naming the problem and the fix, and a run's saved
config.json loads as a config (for every tool, with overrides on top) that resumes that run."""

import json
import subprocess
import sys

import cli_helpers
import jax
import pytest
from etils import epath

from configs import cpu_debug
from wavlejepa import checkpointing, config_validation, model_sizes, saved_config

_run = cli_helpers.run_module
_assert_refused = cli_helpers.assert_refused

# What every tool does with its flags (`app.run(main, flags_parser=cli.parse_flags)` with a
# DEFINE_config_file flag), in a program that prints the config: 0.3 s, not a tool's JAX import.
_TOOL = (
    "from absl import app; from ml_collections import config_flags; from wavlejepa import cli; "
    "c = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True); "
    "app.run(lambda argv: print(c.value.to_json(sort_keys=True)), flags_parser=cli.parse_flags)"
)


def _parse(*args, cwd=cli_helpers.REPO):
    """The flags `args` parsed as every tool parses them; stdout is the config as JSON."""
    return subprocess.run(
        [sys.executable, "-c", _TOOL, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _refused_in_one_line(result, *phrases):
    _assert_refused(result, *phrases)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.fixture()
def saved(tmp_path):
    """A run's config.json as train.py writes it: cpu_debug with the size's numbers filled in."""
    config = cpu_debug.get_config()
    config.model = model_sizes.resolve(config.model)
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    path.write_text(config.to_json_best_effort(indent=2))
    return path


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    config = tmp_path / "broken.py"
    config.write_text("import ml_collections\n\n\ndef get_config(:\n    pass\n")
    result = _parse(f"--config={config}")
    _refused_in_one_line(result, f"{config}:4: syntax error in the config file", "Fix that line")


def test_a_file_without_get_config_names_the_file_and_the_fix(tmp_path):
    config = tmp_path / "no_function.py"
    config.write_text("import ml_collections\n\nCONFIG = ml_collections.ConfigDict()\n")
    result = _parse(f"--config={config}")
    _refused_in_one_line(
        result, f"{config} defines no get_config()", "ml_collections.ConfigDict", "configs/"
    )


@pytest.mark.parametrize(
    "override, phrases",
    [
        ("--config.model=base", ["config.model is a group of keys", "--config.model.size=base"]),
        ("--config.dataset=x", ["--config.dataset.name=x", "its keys: audio_dir"]),
    ],
)
def test_a_value_given_to_a_group_names_the_key_meant(override, phrases):
    result = _parse("--config=configs/cpu_debug.py", override)
    _refused_in_one_line(result, *phrases)


def test_a_missing_relative_path_says_where_it_looked(tmp_path):
    result = _parse("--config=configs/cpu_debug.py", cwd=tmp_path)
    looked = f"looked for {tmp_path / 'configs' / 'cpu_debug.py'}, relative to {tmp_path}"
    _refused_in_one_line(result, "--config=configs/cpu_debug.py: No such file", looked)


def test_a_saved_config_loads_as_the_config_it_records(saved):
    # JSON has lists where the config had tuples: the loaded config must have the same values
    # of the same types, pass validation, and pass the run's own record check.
    expected = json.loads(saved.read_text())
    loaded = saved_config.load(str(saved))
    original = cpu_debug.get_config()
    original.model = model_sizes.resolve(original.model)
    assert loaded.to_dict() == original.to_dict()
    types = jax.tree.map(type, original.to_dict()), jax.tree.map(type, loaded.to_dict())
    assert types[0] == types[1]
    assert json.loads(loaded.to_json()) == expected
    config_validation.validate(loaded, num_devices=1, num_processes=1)
    checkpointing.check_run_record(epath.Path(saved), loaded)


def test_a_config_saved_before_the_form_keys_builds_the_form_it_trained(saved):
    record = json.loads(saved.read_text())
    for key in model_sizes.FORM_DEFAULTS:
        del record["model"][key]
    saved.write_text(json.dumps(record))
    loaded = saved_config.load(str(saved))
    assert {k: loaded.model[k] for k in model_sizes.FORM_DEFAULTS} == {
        "block_norm": "pre",
        "gelu": "tanh",
        "encoder_final_norm_eps": 1e-6,
        "projection_init": "normal",
    }


def test_a_config_saved_before_keep_checkpoints_every_keeps_only_the_latest(saved):
    record = json.loads(saved.read_text())
    del record["keep_checkpoints_every"]
    saved.write_text(json.dumps(record))
    assert saved_config.load(str(saved)).keep_checkpoints_every == 0


def test_a_saved_config_takes_overrides(saved):
    # A tuple key (JSON's list) is overridden as in the config file the run came from.
    override = "--config.model.projector_hidden_dims=256"
    plain = _parse("--config", str(saved))
    from_json = _parse(f"--config={saved}", override)
    from_file = _parse("--config=configs/cpu_debug.py", override)
    assert plain.returncode == 0 and from_json.returncode == 0, plain.stderr + from_json.stderr
    assert json.loads(from_json.stdout)["model"]["projector_hidden_dims"] == [256]
    assert from_json.stdout == from_file.stdout != plain.stdout


def test_a_saved_config_that_is_not_json_names_the_file_and_line(saved):
    lines = saved.read_text().splitlines()
    lines.insert(3, '  "x": 1,,')  # Line 4.
    saved.write_text("\n".join(lines))
    result = _parse(f"--config={saved}")
    _refused_in_one_line(result, f"{saved}:4: not valid JSON", "fix that line")


def test_another_models_run_names_the_config_that_resumes_it(saved):
    small = cpu_debug.get_config()
    small.model = model_sizes.model_config("small")
    with pytest.raises(checkpointing.CheckpointError) as refused:
        checkpointing.check_run_record(epath.Path(saved), small)
    message = str(refused.value)
    for phrase in ("another shape", "nothing was written", "new --workdir", f"--config={saved}"):
        assert phrase in message, (phrase, message)
    # The command given works: that config loads, and is the run's own.
    checkpointing.check_run_record(epath.Path(saved), saved_config.load(str(saved)))


def test_a_run_resumes_from_its_saved_config(tmp_path):
    workdir = tmp_path / "run"
    first = _run(
        "wavlejepa.main",
        "--config=configs/cpu_debug.py",
        "--config.debug_dummy_data=True",
        "--config.total_steps=2",
        f"--workdir={workdir}",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _run(
        "wavlejepa.main",
        f"--config={workdir / 'config.json'}",
        "--config.total_steps=4",
        f"--workdir={workdir}",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from the checkpoint of step 2" in resumed.stderr
    assert "Training steps 3..4" in resumed.stderr
    assert sorted(checkpointing.finished_steps(workdir / "checkpoints")) == [2, 4]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4]
    assert json.loads((workdir / "config.json").read_text())["total_steps"] == 4
