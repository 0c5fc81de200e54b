"""wavlejepa/cli.py: --help of every tool (exit 0, before any heavy import)."""

import os
import subprocess
import sys

import pytest

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
