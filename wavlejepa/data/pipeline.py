"""grain input pipeline: clips of a prepared dataset (or synthetic ones) -> batches of crops.

Every element (all modes, train and eval, dummy data too) is a dict:
  "audio": float32 [batch_size, crop_samples], each crop normalised over its real samples;
  "lengths": int32 [batch_size], the real samples at the start of each crop: crop_samples, but
      fewer for crops of a clip zero-padded by short_clips="pad" (the padding is exactly 0);
  "clip_starts": int32 [batch_size, transforms.MAX_CLIPS_PER_CROP], where source clips begin in
      each crop: 0, then each later start, then -1 (starts past the cap are dropped).
Each batch is `batch_size // crops_per_clip` stretches giving `crops_per_clip` crops each
(transforms.py). A stretch is one clip or, with short_clips="pack", a clip shorter than a crop
followed by the next clips of a seeded order of the host's shard (packing.py). So clips shorter
than a crop are joined ("pack": crops full of audio, none repeated), zero-padded ("pad": all
crops of such a clip are equal) or dropped ("skip"). Each host reads its own shard
(shard_index/shard_count = jax.process_index()/count()). With config.dataset.num_workers > 0
grain starts worker processes, which read grain's absl flags: programs parse flags first
(`app.run`); a notebook or test that builds such a loader calls `flags.FLAGS.mark_as_parsed()`.

Build the dataset first (on process 0, then sync hosts) with `ensure_built(config.dataset)`;
`check_data` raises, without starting a loader, what the loaders would (a dataset problem the user
can fix is a DatasetError, whose message names the fix). Then:

  loader = pipeline.create_train_loader(config.dataset, batch_size=config.batch_size // n_hosts,
                                        seed=config.seed, shard_index=jax.process_index(),
                                        shard_count=jax.process_count())
  data_iter = iter(loader)  # grain DataLoaderIterator: get_state() / set_state(bytes).

Checkpoint the iterator with the train state in one orbax CheckpointManager (grain registers its
handler with orbax; each host writes `data_iter/process_{i}-of-{n}.json`):

  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(data_iter)))
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data_iter=grain.checkpoint.CheckpointRestore(data_iter)))  # Restores data_iter in place.

The saved state is read when `save` is called, so the loop may go on drawing batches while orbax
writes. A state restores only into a loader built with the same dataset, split, shard, seed and
num_workers (grain checks them and raises otherwise).
"""

import grain

from wavlejepa.data import packing, sources, synthetic, transforms
from wavlejepa.data.sources import DatasetError, ensure_built  # noqa: F401  (this module's API)
from wavlejepa.data.transforms import crop_samples, normalize  # noqa: F401  (ditto)

SHORT_CLIPS = ("pack", "pad", "skip")
EVAL_SEED = 0  # Eval crops are drawn from this fixed seed, whatever config.seed is.
DUMMY_TRAIN_CLIPS = 1024  # Synthetic clips behind dummy=True (train split).
DUMMY_EVAL_CLIPS = 128  # Synthetic clips behind dummy=True (eval split).


def problems(dataset_config):
    """Yields one message per bad value of the pipeline's options (config_validation reports
    them all before any compute; building a loader raises the first)."""
    if dataset_config.short_clips not in SHORT_CLIPS:
        yield (
            f"config.dataset.short_clips={dataset_config.short_clips!r}; choose one of "
            f"{SHORT_CLIPS}."
        )


def _check(dataset_config, batch_size: int) -> None:
    if batch_size <= 0 or batch_size % dataset_config.crops_per_clip:
        raise ValueError(
            f"The per-host batch size {batch_size} (config.batch_size / process count) must be a "
            f"positive multiple of config.dataset.crops_per_clip={dataset_config.crops_per_clip}:"
            " each clip gives that many crops to one batch."
        )
    for problem in problems(dataset_config):
        raise ValueError(problem)


def _source(dataset_config, split: str, dummy: bool, num_dummy: int, dummy_seed: int):
    """(random-access source, key of its waveform)."""
    if not dummy:
        return sources.open_source(dataset_config, split), dataset_config.audio_key
    n = crop_samples(dataset_config)
    clips = synthetic.SyntheticSource(
        num_dummy, n // 2, 3 * n, dataset_config.sample_rate, seed=dummy_seed
    )
    return clips, "audio"


def _loader(
    dataset_config, source, audio_key, batch_size, shard_index, shard_count, *, train, seed
):
    """grain.DataLoader: source -> stretches (packed or single clips) -> crops -> batches.

    `train`: shuffled and endless; else one pass in order over shards cut evenly (eval).
    """
    n, k = crop_samples(dataset_config), dataset_config.crops_per_clip
    shard = grain.sharding.ShardOptions(shard_index, shard_count, drop_remainder=not train)
    if dataset_config.short_clips == "pack":
        source = packing.PackedClips(
            source, audio_key=audio_key, crop_samples=n, num_crops=k, seed=seed, shard_options=shard
        )
        operations = []
    else:
        operations = [transforms.ToFloat(audio_key)]
    if dataset_config.short_clips == "skip":
        operations.append(transforms.AtLeast(n))
    operations += [
        transforms.RandomCrops(k, n),
        grain.transforms.Batch(
            batch_size // k, drop_remainder=True, batch_fn=transforms.concat_crops
        ),
    ]
    return grain.DataLoader(
        data_source=source,
        sampler=grain.samplers.IndexSampler(
            len(source),
            shard_options=shard,
            shuffle=train,
            num_epochs=None if train else 1,
            seed=seed,
        ),
        operations=operations,
        worker_count=dataset_config.num_workers,
        shard_options=shard,
    )


def create_train_loader(
    dataset_config,
    *,
    batch_size: int,
    seed: int,
    shard_index: int,
    shard_count: int,
    dummy: bool = False,
) -> grain.DataLoader:
    """Infinite, shuffled batches of config.dataset.split for this host.

    Args:
      dataset_config: config.dataset.
      batch_size: crops per batch on this host (global batch / process count).
      seed: orders and shuffles the clips and draws the crops (a non-negative 32-bit int).
      shard_index, shard_count: this host's shard of the clips.
      dummy: synthetic clips instead of a dataset (config.debug_dummy_data).
    Returns:
      A grain.DataLoader of {"audio", "lengths", "clip_starts"} batches (module docstring).
    """
    _check(dataset_config, batch_size)
    source, key = _source(dataset_config, dataset_config.split, dummy, DUMMY_TRAIN_CLIPS, 0)
    return _loader(
        dataset_config, source, key, batch_size, shard_index, shard_count, train=True, seed=seed
    )


def create_eval_loader(
    dataset_config,
    *,
    batch_size: int,
    shard_index: int,
    shard_count: int,
    dummy: bool = False,
) -> grain.DataLoader:
    """One pass over config.dataset.eval_split in a fixed order with fixed crops.

    Every host gets the same number of full batches (shards are cut evenly, a partial last batch
    is dropped), so collective eval steps never wait on a host that ran out; with
    short_clips="skip" hosts may drop different numbers of clips, so take at most as many batches
    as the shortest host has.

    Returns:
      A finite grain.DataLoader of {"audio", "lengths", "clip_starts"} batches (module docstring).
    Raises:
      DatasetError: the split cannot fill one batch on this host.
    """
    _check(dataset_config, batch_size)
    source, key = _source(dataset_config, dataset_config.eval_split, dummy, DUMMY_EVAL_CLIPS, 1)
    _check_eval_size(dataset_config, len(source), batch_size, shard_count)
    return _loader(
        dataset_config,
        source,
        key,
        batch_size,
        shard_index,
        shard_count,
        train=False,
        seed=EVAL_SEED,
    )


def _check_eval_size(dataset_config, num_clips: int, batch_size: int, shard_count: int) -> None:
    """Raises DatasetError unless each host's shard of the eval split fills one batch."""
    clips_per_batch = batch_size // dataset_config.crops_per_clip
    per_host = num_clips // shard_count
    if per_host < clips_per_batch:
        raise DatasetError(
            f"Split {dataset_config.eval_split!r} of {dataset_config.name!r} has {num_clips} "
            f"clips: {per_host} per host, fewer than the {clips_per_batch} one eval batch needs. "
            "Use a smaller batch or more held-out clips (for an audio_folder, a larger "
            "config.dataset.validation_fraction)."
        )


def check_data(dataset_config, *, batch_size: int, shard_count: int, with_eval: bool) -> None:
    """Raises what building this host's loaders would, without building them: a bad option
    (ValueError), or (DatasetError) a split that does not open or, `with_eval`, an eval split
    too small for one batch per host. Call it after `ensure_built`, before writing anything."""
    _check(dataset_config, batch_size)
    sources.open_source(dataset_config, dataset_config.split)
    if with_eval:
        source = sources.open_source(dataset_config, dataset_config.eval_split)
        _check_eval_size(dataset_config, len(source), batch_size, shard_count)
