r"""Prints the parameter count of a config's model, per component, without allocating it.

python -m wavlejepa.param_count --config=configs/default.py
"""

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from wavlejepa import cli, config_kinds, model, model_sizes, runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.mark_flag_as_required("config")


def count(model_config) -> dict[str, int]:
    """Parameters per top-level component, from shapes only."""
    shapes = jax.eval_shape(lambda k: model.init(k, model_config), jax.random.PRNGKey(0))
    return {name: sum(x.size for x in jax.tree.leaves(tree)) for name, tree in shapes.items()}


def main(argv):
    del argv
    runtime.set_up()
    try:  # `--config.model.size` picks the size table's row; its keys checked as in training.
        model_config = model_sizes.resolve(_CONFIG.value.model)
    except ValueError as e:
        cli.fail(str(e))
    config = ml_collections.ConfigDict(_CONFIG.value.to_dict())
    config.model = model_config
    problems = [p for key, p in config_kinds.problems(config) if key.startswith("model.")]
    if problems:
        cli.fail("invalid config: " + " ".join(problems))
    counts = count(model_config)
    for name, n in counts.items():
        print(f"{name:18s} {n:>13,d}")
    print(f"{'total':18s} {sum(counts.values()):>13,d}")
    print(f"{'without projector':18s} {sum(counts.values()) - counts['projector']:>13,d}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
