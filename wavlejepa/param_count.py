r"""Prints the parameter count of a config's model, per component, without allocating it.

python -m wavlejepa.param_count --config=configs/default.py
"""

import jax
from absl import app
from ml_collections import config_flags

from wavlejepa import cli, model, runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)


def count(model_config) -> dict[str, int]:
    """Parameters per top-level component, from shapes only."""
    shapes = jax.eval_shape(lambda k: model.init(k, model_config), jax.random.PRNGKey(0))
    return {name: sum(x.size for x in jax.tree.leaves(tree)) for name, tree in shapes.items()}


def main(argv):
    del argv
    runtime.set_up()
    counts = count(_CONFIG.value.model)
    for name, n in counts.items():
        print(f"{name:18s} {n:>13,d}")
    print(f"{'total':18s} {sum(counts.values()):>13,d}")
    print(f"{'without projector':18s} {sum(counts.values()) - counts['projector']:>13,d}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
