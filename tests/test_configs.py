"""Every config file builds a model and train state (shapes only), and bad values fail early."""

import functools
import glob
import importlib
import math
import os
import re
import subprocess
import sys

import jax
import pytest

from configs import cpu_debug, default
from wavlejepa import config_validation, model_sizes, sigreg, train, train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
    if not p.endswith("__init__.py")
)


def test_hardware_configs_exist():
    assert {"default", "cpu_debug", "tpu_v4", "gpu", "quickstart"} <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_validates_and_initialises_without_allocating(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    config_validation.validate(config, num_devices=1)
    create = functools.partial(train_state.create, config=config)
    state = jax.eval_shape(create, jax.random.PRNGKey(config.seed))
    assert isinstance(state.step, jax.ShapeDtypeStruct)  # Shapes only: nothing allocated.
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jax.numpy.dtype("float32")}
    assert state.rng.shape == (2,)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_trains_the_one_loss_recipe(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    recipe = default.get_config().loss
    for key in ("sigreg_weight", "clip_sigreg_weight", "t_max", "num_knots"):
        assert config.loss[key] == recipe[key], key


# lambda * N (N the rows SIGReg tests a step) where the recipe was measured to learn, at the
# small model's 32 x 50 rows: 4.8 (lambda 0.003) to 16 (0.01); 80 (0.05) swamped the prediction.
# The clip statistic's weight times N: 0.8 (0.0005) to 3.2 (0.002). docs/experiments/objective.md.
MEASURED_SIGREG_PULL = (4.8, 16.0)
MEASURED_CLIP_PULL = (0.8, 3.2)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_weighs_sigreg_as_where_it_was_measured(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    if config.batch_size < 32:  # cpu_debug: a plumbing check, not a recipe.
        pytest.skip(f"{name} trains {config.batch_size} crops a step")
    rows = math.prod(sigreg.sample_shape(config))
    low, high = MEASURED_SIGREG_PULL
    assert low - 1e-9 <= config.loss.sigreg_weight * rows <= high + 1e-9, (name, rows)
    low, high = MEASURED_CLIP_PULL
    assert low - 1e-9 <= config.loss.clip_sigreg_weight * rows <= high + 1e-9, (name, rows)


def _bad(**overrides):
    config = cpu_debug.get_config()
    for path, value in overrides.items():
        *parents, key = path.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[key] = value
    return config


@pytest.mark.parametrize(
    "overrides, num_devices, expected",
    [
        (dict(optimizer__peak_lr=0.0), 1, "config.optimizer.peak_lr=0.0 must be > 0"),
        (dict(optimizer__peak_lr=-1e-3), 1, "config.optimizer.peak_lr"),
        (dict(batch_size=12), 8, "config.batch_size=12 must be a positive multiple of the 8"),
        (dict(batch_size=6, dataset__crops_per_clip=4), 1, "config.dataset.crops_per_clip=4"),
        (dict(loss__clip_sigreg_weight=-0.1), 1, "config.loss.clip_sigreg_weight=-0.1"),
        (dict(model__dtype="fp16"), 1, "config.model.dtype='fp16'"),
        (dict(masking__spans_per_target_group=5), 1, "config.masking"),
        (dict(dataset__crop_seconds=0.001), 1, "config.dataset.crop_seconds"),
        (dict(total_steps=0), 1, "config.total_steps=0 must be >= 1"),
        (dict(model__size="smal"), 1, "config.model.size='smal': choose one of"),
        (dict(dataset__short_clips="trim"), 1, "config.dataset.short_clips='trim'"),
        (dict(loss__sigreg_crops=1), 1, "config.loss.sigreg_crops=1 and sigreg_frames=50"),
        (dict(health__min_rank_fraction=1.5), 1, "config.health.min_rank_fraction=1.5"),
        (dict(model__block_norm="sandwich"), 1, "config.model.block_norm='sandwich': choose"),
        (dict(model__gelu="erf"), 1, "config.model.gelu='erf': choose one of"),
        (dict(model__projection_init="zeros"), 1, "config.model.projection_init='zeros'"),
        (dict(model__projection_init="identity"), 1, "needs conv_channels == encoder_width"),
        (dict(model__encoder_final_norm_eps=0.0), 1, "config.model.encoder_final_norm_eps=0.0"),
        (dict(model__encoder_final_norm_eps=1.0), 1, "must be a number in (0, 0.01]"),
        (dict(keep_checkpoints_every=-1), 1, "config.keep_checkpoints_every=-1 must be 0 or a"),
        (dict(keep_checkpoints_every=7), 1, "multiple of checkpoint_every_steps=10 (only saved"),
    ],
)
def test_bad_values_are_named_with_their_key(overrides, num_devices, expected):
    with pytest.raises(ValueError, match="invalid config") as error:
        config_validation.validate(_bad(**overrides), num_devices=num_devices)
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "batch, crops, num_devices, num_processes",
    [(-1, 2, 1, 1), (0, 2, 1, 1), (3, 2, 1, 1), (6, 4, 1, 1), (12, 3, 8, 2), (-5, 5, 4, 4)],
)
def test_a_bad_batch_size_suggests_one_that_passes(batch, crops, num_devices, num_processes):
    config = _bad(batch_size=batch, dataset__crops_per_clip=crops)
    with pytest.raises(ValueError) as error:
        config_validation.validate(config, num_devices=num_devices, num_processes=num_processes)
    suggestion = re.search(r"(?:try |e\.g\. config\.batch_size=)(\d+)\.", str(error.value))
    assert suggestion, str(error.value)
    config.batch_size = int(suggestion.group(1))
    config_validation.validate(config, num_devices=num_devices, num_processes=num_processes)


def test_every_problem_is_reported_at_once():
    config = _bad(optimizer__peak_lr=0.0, model__dtype="fp16")
    with pytest.raises(ValueError) as error:
        config_validation.validate(config, num_devices=1)
    assert "peak_lr" in str(error.value) and "dtype" in str(error.value)


def test_unknown_evaluator_is_named():
    config = cpu_debug.get_config()
    config.evals.no_such_probe = {}
    with pytest.raises(ValueError, match="config.evals.no_such_probe"):
        config_validation.validate(config, num_devices=1)


def test_train_fails_before_any_compute(tmp_path):
    workdir = tmp_path / "never_created"
    with pytest.raises(ValueError, match="config.optimizer.peak_lr"):
        train.train_and_evaluate(_bad(optimizer__peak_lr=0.0), str(workdir))
    assert not workdir.exists()


def _main(workdir, override):
    """`python -m wavlejepa.main` on cpu_debug with one --config override."""
    return subprocess.run(
        [sys.executable, "-m", "wavlejepa.main", "--config=configs/cpu_debug.py",
         f"--workdir={workdir}", override],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )  # fmt: skip


def test_unknown_key_on_the_command_line_names_it(tmp_path):
    result = _main(tmp_path, "--config.optimizer.peak_lrr=1e-3")
    assert result.returncode != 0
    assert 'Did you mean "peak_lr" instead of "peak_lrr"?' in result.stderr
    assert not any(tmp_path.iterdir())


def test_the_size_picks_the_model_and_hand_changes_are_kept():
    config = cpu_debug.get_config()  # The tiny row.
    config.model.size = "small"
    resolved = model_sizes.resolve(config.model)
    for key, value in model_sizes.SIZES["small"].items():
        assert tuple(resolved[key]) == value if isinstance(value, tuple) else resolved[key] == value
    assert resolved.dtype == config.model.dtype  # Fields outside the size table stay.
    assert model_sizes.describe(resolved).startswith("small: conv 256, encoder 4x256")
    # A field changed by hand matches no row: nothing is overwritten, and the log says so.
    config.model.encoder_depth = 3
    kept = model_sizes.resolve(config.model)
    assert kept.encoder_depth == 3 and kept.encoder_width == 64
    assert "changed by hand" in model_sizes.describe(kept)


def test_a_bad_value_on_the_command_line_is_one_line(tmp_path):
    result = _main(tmp_path / "run", "--config.loss.sigreg_weight=3")
    assert result.returncode == 2
    assert "config.loss.sigreg_weight=3.0 must be in [0, 1]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
