r"""How healthy a random init is: the collapse checks of `research.learning` at step 0 only.

  python -m research.init_health --config=configs/quickstart.py \
      --fsdd_dir=../shared/data/fsdd/recordings --json=init.json
  python -m research.init_health --config=configs/quickstart.py \
      --config.model.projection_init=identity ...

The official WavJEPA has no projection after its conv stack where the conv channels equal the
encoder width (its small-conv256 preset: 256 and 256); ours always has one, a dense layer drawn
with std 0.02 (0.0176 after truncation). `--config.model.projection_init=identity` starts it as
the identity, WavJEPA's form of that layer (the blocks keep ours' init), to measure what that one
difference does to the init's health. Embeds every FSDD clip once and prints (and writes to --json)
`learning.collapse_checks`: no training, no probes.
"""

from absl import app

from benchmarks import common
from research import learning
from wavlejepa import cli
from wavlejepa.data import fsdd
from wavlejepa.evaluators import linear_probe

# --config, --fsdd_dir, --share_frames, --batch_size and --json are research.learning's flags.


def init_health(params: dict, config, data: dict, share_frames: int, batch_size: int) -> dict:
    """Shares, frame rank and health of `params` on every FSDD clip of `data`."""
    frames_fn = linear_probe.model_frames(params, config, batch_size)
    frames = {s: frames_fn(data[s]["audio"]) for s in learning.SPLITS}
    return learning.collapse_checks(frames, share_frames)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = learning._CONFIG.value
    params = learning.initial_params(config)
    data = fsdd.load_fsdd(learning._FSDD_DIR.value)
    stats = init_health(
        params, config, data, learning._SHARE_FRAMES.value, learning._BATCH_SIZE.value
    )
    print(" ".join(f"{k} {v:.4g}" for k, v in stats.items()))
    if learning._JSON.value:
        settings = dict(
            model_size=config.model.size,
            seed=config.seed,
            fsdd_dir=learning._FSDD_DIR.value,
            projection_init=config.model.projection_init,
        )
        common.write_json(learning._JSON.value, {"settings": settings, "init": stats}, indent=1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
