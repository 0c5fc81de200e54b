"""wavlejepa/cli.py: --help of every tool (exit 0, before any heavy import); `outputs`."""

import os
import subprocess
import sys

import pytest

from wavlejepa import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = {  # module -> a flag its --help must list
    "main": "--workdir",
    "embed": "--checkpoint",
    "evaluate": "--baseline",
    "prepare_dataset": "--audio_dir",
    "plot": "--output_dir",
}
HEAVY = ("jax", "tensorflow", "tensorflow_datasets", "clu", "orbax", "optax")


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_exits_0_with_the_flags_and_imports_nothing_heavy(tool):
    # --help is handled in cli.parse_flags; the program's main() (which imports JAX) never runs.
    # `sys.modules` at exit tells what was imported.
    code = (
        "import atexit, runpy, sys\n"
        f"atexit.register(lambda: print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules]))\n"
        f"sys.argv = ['{tool}', '--help']\n"
        f"runpy.run_module('wavlejepa.{tool}', run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert TOOLS[tool] in result.stdout
    assert "HEAVY []" in result.stdout


def test_training_checks_its_config_before_tensorflow_is_imported(tmp_path):
    # A bad value is refused in seconds: TensorFlow (the dataset code's) is not yet imported.
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('TF', 'tensorflow' in sys.modules))\n"
        f"sys.argv = ['main', '--config=configs/cpu_debug.py', '--workdir={tmp_path / 'run'}',"
        " '--config.optimizer.b1=nan']\n"
        "runpy.run_module('wavlejepa.main', run_name='__main__')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == cli.USAGE_ERROR, result.stderr
    assert result.stderr.startswith("error: invalid config: config.optimizer.b1=nan: must be")
    assert "TF False" in result.stdout
    assert not (tmp_path / "run").exists()


def _fail_inside(outputs, code=cli.USAGE_ERROR, write=lambda: None):
    with pytest.raises(SystemExit):
        with outputs:
            write()
            sys.exit(code)


def test_outputs_undo_what_a_failing_tool_made(tmp_path):
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "config.json").write_text("before")
    (existing / "keep.txt").write_text("mine")
    new = tmp_path / "new" / "deeper" / "out"

    def write():
        new.mkdir(parents=True)
        (new / "a.npz").write_bytes(b"x")
        (existing / "config.json").write_text("rewritten")
        (existing / "best").mkdir()
        (existing / "events.log").write_text("new")

    _fail_inside(cli.outputs(str(existing), str(new)), write=write)
    assert not (tmp_path / "new").exists()  # The path and the folders made to hold it.
    assert sorted(p.name for p in existing.iterdir()) == ["config.json", "keep.txt"]
    assert (existing / "config.json").read_text() == "before"  # Put back.
    assert (existing / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("how", ["success", "diverged", "keep"])
def test_outputs_keep_what_a_run_made_when_it_is_worth_keeping(tmp_path, how):
    out = tmp_path / "out"
    make = lambda: (out.mkdir(), (out / "ckpt").write_text("step 5"))  # noqa: E731
    if how == "success":
        with cli.outputs(str(out)):
            make()
    elif how == "diverged":  # Exit 3: the run stopped itself; its last checkpoint stays.
        _fail_inside(cli.outputs(str(out)), code=cli.NON_FINITE, write=make)
    else:
        _fail_inside(cli.outputs(str(out), keep=lambda: True), write=make)
    assert (out / "ckpt").read_text() == "step 5"
