"""Tests of the grain input pipeline: element format, crops, shards, resume, dummy and catalog."""

import gc
import os

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
import scipy.signal
import tensorflow_datasets as tfds
from absl import flags
from grain._src.python.dataset.transformations import process_prefetch

import wavlejepa.data
from configs import cpu_debug, default, quickstart
from wavlejepa.data import pipeline, resampled, sources, transforms

NAME = "fsdd_sample"


def _dataset_config(data_dir="", **overrides):
    config = default.get_config().dataset
    config.update(
        name=NAME,
        data_dir=data_dir,
        crop_seconds=0.51,
        crops_per_clip=2,
        num_workers=0,
        validation_fraction=0.1,
        test_fraction=0.1,
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    config = _dataset_config(data_dir, audio_dir=wavlejepa.data.FSDD_SAMPLE_DIR)
    pipeline.ensure_built(config)
    return data_dir


@pytest.fixture(autouse=True)
def _stop_prefetching():
    # Iterators prefetch on threads until collected; stop them so tests do not slow each other.
    yield
    gc.collect()


def _take(loader, n):
    return [batch["audio"] for batch in _take_batches(loader, n)]


def _take_batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys() == {"audio", "lengths", "clip_starts"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def _reference_normalize(x, lengths=None):
    """Row by row in float64: the first `lengths` samples normalised, the rest 0."""
    x = np.asarray(x, np.float64)
    lengths = np.full(x.shape[:-1], x.shape[-1]) if lengths is None else lengths
    out = np.zeros_like(x)
    for row in np.ndindex(x.shape[:-1]):
        if lengths[row] == 0:
            continue
        real = x[row][: lengths[row]]
        c = real - real.mean()
        out[row][: lengths[row]] = c / np.sqrt((c * c).mean() + 1e-5)
    return out


def _one_clip(audio):
    return {"audio": audio, "clip_starts": np.zeros(1, np.int64)}


def test_crop_samples():
    assert pipeline.crop_samples(default.get_config().dataset) == 32_160
    assert pipeline.crop_samples(cpu_debug.get_config().dataset) == 8_160


def test_normalize_against_float64_and_silence():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [3.0 + 0.5 * rng.standard_normal((3, 1000)), np.full((1, 1000), 0.7), np.zeros((1, 1000))]
    ).astype(np.float32)
    y = pipeline.normalize(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, _reference_normalize(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y[:3].mean(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(y[:3].std(-1), np.sqrt(0.25 / (0.25 + 1e-5)), rtol=0.02)
    np.testing.assert_array_equal(y[3:], 0.0)  # Constant crops: zeros, not NaN.


def test_random_crops_are_normalised_windows():
    clip = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    out = transforms.RandomCrops(num_crops=6, crop_samples=900).random_map(
        _one_clip(clip), np.random.default_rng(2)
    )
    crops = out["audio"]
    assert crops.shape == (6, 900) and crops.dtype == np.float32
    np.testing.assert_array_equal(out["lengths"], np.full(6, 900, np.int32))
    np.testing.assert_array_equal(out["clip_starts"], np.tile([0] + [-1] * 7, (6, 1)))
    windows = _reference_normalize(np.stack([clip[s : s + 900] for s in range(101)]))
    for crop in crops:  # Each crop is exactly one window of the clip, normalised.
        err = np.abs(windows - crop).max(axis=1)
        assert err.min() < 1e-5
    starts = {int(np.abs(windows - c).max(axis=1).argmin()) for c in crops}
    assert len(starts) > 1  # Random, not all the same window.


def test_short_clip_is_zero_padded_and_normalised_over_its_samples():
    clip = np.linspace(-0.2, 0.5, 300, dtype=np.float32)
    out = transforms.RandomCrops(num_crops=3, crop_samples=500).random_map(
        _one_clip(clip), np.random.default_rng(0)
    )
    assert out["lengths"].dtype == np.int32 and out["audio"].dtype == np.float32
    np.testing.assert_array_equal(out["lengths"], [300, 300, 300])
    real = clip.astype(np.float64) - clip.mean(dtype=np.float64)
    expected = real / np.sqrt(np.mean(real**2) + 1e-5)  # Padding zeros not in mean or variance.
    for crop in out["audio"]:
        np.testing.assert_allclose(crop[:300], expected, atol=1e-6)
        np.testing.assert_array_equal(crop[300:], 0.0)


def test_normalize_with_lengths_against_float64():
    rng = np.random.default_rng(4)
    x = 0.3 + rng.standard_normal((2, 3, 50))
    lengths = np.array([[50, 7, 1], [0, 20, 49]])
    y = pipeline.normalize(x, lengths)
    np.testing.assert_allclose(y, _reference_normalize(x, lengths), atol=1e-6)
    assert np.all(y[0, 2] == 0) and np.all(y[1, 0] == 0)  # One sample, none: zeros, not NaN.


def test_silent_clip_gives_zero_crops():
    silent = {"audio": np.zeros(1000, np.int64)}  # Catalog datasets may hold silence.
    clip = transforms.ToFloat().map(silent)
    out = transforms.RandomCrops(num_crops=2, crop_samples=400).random_map(
        clip, np.random.default_rng(0)
    )
    assert out["audio"].dtype == np.float32
    np.testing.assert_array_equal(out["audio"], np.zeros((2, 400)))


def test_batch_size_must_be_a_multiple_of_crops_per_clip():
    config = _dataset_config(crops_per_clip=3)
    with pytest.raises(ValueError, match=r"config\.batch_size.*config\.dataset\.crops_per_clip=3"):
        pipeline.create_train_loader(
            config, batch_size=8, seed=0, shard_index=0, shard_count=1, dummy=True
        )


@pytest.mark.parametrize("short_clips", pipeline.SHORT_CLIPS)
def test_train_elements(data_dir, short_clips):
    loader = pipeline.create_train_loader(
        _dataset_config(data_dir, short_clips=short_clips),
        batch_size=8,
        seed=0,
        shard_index=0,
        shard_count=1,
    )
    batch = next(iter(loader))
    assert batch.keys() == {"audio", "lengths", "clip_starts"}
    audio, lengths, starts = batch["audio"], batch["lengths"], batch["clip_starts"]
    assert audio.shape == (8, 8_160) and audio.dtype == np.float32
    assert lengths.shape == (8,) and lengths.dtype == np.int32
    assert starts.shape == (8, transforms.MAX_CLIPS_PER_CROP) and starts.dtype == np.int32
    assert np.all(starts[:, 0] == 0) and np.all((lengths > 0) & (lengths <= 8_160))
    real = np.arange(8_160) < lengths[:, None]
    np.testing.assert_array_equal(audio[~real], 0.0)
    for crop, n in zip(audio, lengths, strict=True):  # Normalised over the real samples.
        assert abs(crop[:n].mean()) < 1e-5 and 0.5 < crop[:n].std() <= 1.0
    # The split has clips shorter than a crop: only "pad" leaves padding in the crops.
    source = tfds.data_source(NAME, data_dir=data_dir, split="train")
    assert any(len(source[i]["audio"]) < 8_160 for i in range(len(source)))
    assert np.all(lengths == 8_160) == (short_clips != "pad")


def _identify(batches, source, n):
    """Record index of each crop of a whole clip (crop longer than every clip, so padded).

    Checks each crop is its clip normalised over the clip's samples, then exact zeros, and that
    its length is the clip's.
    """
    clips = np.zeros((len(source), n))
    lengths = np.zeros(len(source), int)
    for i in range(len(source)):
        x = source[i]["audio"].astype(np.float64) / 32768
        assert len(x) < n
        clips[i, : len(x)], lengths[i] = x, len(x)
    expected = _reference_normalize(clips, lengths)
    ids = []
    for batch in batches:
        for crop, length in zip(batch["audio"], batch["lengths"], strict=True):
            err = np.abs(expected - crop).max(axis=1)
            assert err.min() < 1e-4
            ids.append(int(err.argmin()))
            assert length == lengths[ids[-1]]
            np.testing.assert_array_equal(crop[length:], 0.0)
    return ids


def test_shards_are_disjoint_and_cover_the_split(data_dir):
    # Crops longer than every clip, zero-padded: each crop names its clip.
    config = _dataset_config(data_dir, crop_seconds=0.9, crops_per_clip=1, short_clips="pad")
    n = pipeline.crop_samples(config)
    train = tfds.data_source(NAME, data_dir=data_dir, split="train")
    seen = []
    for shard in range(2):
        loader = pipeline.create_train_loader(
            config, batch_size=1, seed=3, shard_index=shard, shard_count=2
        )
        epoch = len(train) // 2 + (shard < len(train) % 2)
        data_iter = iter(loader)
        ids = _identify([next(data_iter) for _ in range(epoch)], train, n)
        assert len(set(ids)) == epoch  # One pass over the shard, no clip twice.
        seen.append(set(ids))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(len(train)))

    validation = tfds.data_source(NAME, data_dir=data_dir, split="validation")
    seen = []
    for shard in range(2):
        loader = pipeline.create_eval_loader(config, batch_size=1, shard_index=shard, shard_count=2)
        seen.append(_identify(loader, validation, n))
        assert len(seen[-1]) == len(validation) // 2  # Even shards: hosts step together.
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 2 * (len(validation) // 2)


def test_eval_loader_is_finite_and_deterministic(data_dir):
    config = _dataset_config(data_dir)
    make = lambda: pipeline.create_eval_loader(config, batch_size=4, shard_index=0, shard_count=1)
    first, second = list(make()), list(make())
    clips = len(tfds.data_source(NAME, data_dir=data_dir, split="validation"))
    assert len(first) == clips // 2  # 2 clips per batch of 4 crops; partial batch dropped.
    for a, b in zip(first, second, strict=True):
        _assert_batches_equal(a, b)
    with pytest.raises(ValueError, match="fewer than the"):
        pipeline.create_eval_loader(
            config, batch_size=2 * (clips + 1), shard_index=0, shard_count=1
        )


def test_short_clips_skip_drops_exactly_the_short_ones(data_dir):
    validation = tfds.data_source(NAME, data_dir=data_dir, split="validation")
    long_enough = sum(len(validation[i]["audio"]) >= 8_160 for i in range(len(validation)))
    assert 0 < long_enough < len(validation)
    every = len(validation)
    for short_clips, expected in (("skip", long_enough), ("pad", every), ("pack", every)):
        config = _dataset_config(data_dir, crops_per_clip=1, short_clips=short_clips)
        loader = pipeline.create_eval_loader(config, batch_size=1, shard_index=0, shard_count=1)
        assert sum(1 for _ in loader) == expected


@pytest.mark.parametrize("short_clips", ["pack", "pad"])
def test_resume_through_orbax_gives_the_same_next_batches(data_dir, tmp_path, short_clips):
    config = _dataset_config(data_dir, short_clips=short_clips)
    make = lambda: iter(
        pipeline.create_train_loader(config, batch_size=8, seed=7, shard_index=0, shard_count=1)
    )
    data_iter = make()
    for _ in range(3):
        next(data_iter)
    mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"))
    mngr.save(
        3,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave({"w": np.arange(3.0)}),
            data_iter=grain.checkpoint.CheckpointSave(data_iter),
        ),
    )
    expected = [next(data_iter) for _ in range(4)]  # Drawn while orbax may still write.
    mngr.wait_until_finished()
    assert "process_0-of-1.json" in os.listdir(tmp_path / "ckpt" / "3" / "data_iter")

    restored_iter = make()
    restored = mngr.restore(
        3,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore({"w": np.zeros(3)}),
            data_iter=grain.checkpoint.CheckpointRestore(restored_iter),
        ),
    )
    assert restored["data_iter"] is restored_iter
    for want in expected:
        _assert_batches_equal(next(restored_iter), want)
    fresh = make()  # Without the restore the stream starts over: the check above can fail.
    assert not np.array_equal(next(fresh)["audio"], expected[0]["audio"])


@pytest.fixture
def parsed_flags():
    """absl flags parsed, as `app.run` leaves them: grain reads its flags when it starts worker
    processes (the library never parses or marks them; program entry points do)."""
    was_parsed = flags.FLAGS.is_parsed()
    flags.FLAGS.mark_as_parsed()
    yield
    if not was_parsed:
        flags.FLAGS.unparse_flags()


def test_dummy_data_with_worker_processes_resumes(monkeypatch, parsed_flags):
    # Closing an iterator can wait grain's 25 s for a worker blocked on a full queue, then kill
    # it; here the kill may come sooner (the data was all checked by then).
    monkeypatch.setattr(process_prefetch, "_PROCESS_KILL_TIMEOUT_S", 1)

    def make(seed, workers):  # Base-config crops; no dataset is opened with dummy=True.
        config = _dataset_config(
            crop_seconds=2.01, crops_per_clip=8, num_workers=workers, name="not_prepared_anywhere"
        )
        return iter(
            pipeline.create_train_loader(
                config, batch_size=16, seed=seed, shard_index=0, shard_count=1, dummy=True
            )
        )

    data_iter = make(0, workers=1)
    first = [next(data_iter)["audio"] for _ in range(2)]
    assert first[0].shape == (16, 32_160) and first[0].dtype == np.float32
    np.testing.assert_allclose(first[0].mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(first[0].std(-1), 1.0, atol=2e-3)  # Loud synthetic audio.
    state = data_iter.get_state()
    expected = [next(data_iter) for _ in range(2)]
    restored = make(0, workers=1)
    restored.set_state(state)
    for want in expected:
        _assert_batches_equal(next(restored), want)
    del data_iter, restored  # Stop the worker processes now, not at interpreter exit.
    # Worker processes change where the work runs, not the data; the seed changes the data.
    np.testing.assert_array_equal(next(make(0, workers=0))["audio"], first[0])
    assert not np.array_equal(next(make(1, workers=0))["audio"], first[0])


def test_dummy_eval_is_finite():
    config = _dataset_config(crops_per_clip=2)
    loader = pipeline.create_eval_loader(
        config, batch_size=16, shard_index=0, shard_count=1, dummy=True
    )
    batches = list(loader)
    assert len(batches) == pipeline.DUMMY_EVAL_CLIPS // 8
    for b in batches:
        assert b["audio"].shape == (16, 8_160) and b["lengths"].shape == (16,)
        assert b["clip_starts"].shape == (16, transforms.MAX_CLIPS_PER_CROP)
        np.testing.assert_array_equal(b["lengths"], 8_160)  # Packed: no padding.


def test_catalog_dataset_by_name_with_mock_data(tmp_path):
    config = _dataset_config(str(tmp_path), name="speech_commands")
    with tfds.testing.mock_data(num_examples=10):
        (batch,) = _take(
            pipeline.create_train_loader(
                config, batch_size=4, seed=0, shard_index=0, shard_count=1
            ),
            1,
        )
        assert batch.shape == (4, 8_160) and batch.dtype == np.float32
        assert np.all(np.isfinite(batch))
        config.name = "spoken_digit"  # TFDS's FSDD: 8 kHz, resampled to 16 kHz as it is read.
        source = sources.open_source(config, "train")
        assert isinstance(source, resampled.ResampledSource) and len(source) == 10
        raw = np.asarray(source.source[3]["audio"], np.float64) / 32768
        want = np.clip(np.round(scipy.signal.resample_poly(raw, 2, 1) * 32768), -32768, 32767)
        np.testing.assert_array_equal(source[3]["audio"], want.astype(np.int16))
        (batch,) = _take(
            pipeline.create_train_loader(
                config, batch_size=4, seed=0, shard_index=0, shard_count=1
            ),
            1,
        )
        assert batch.shape == (4, 8_160) and np.all(np.isfinite(batch))


def test_missing_datasets_say_how_to_prepare(tmp_path):
    cases = (
        ("no_such_dataset", "No dataset 'no_such_dataset'"),
        ("speech_commands", "is not prepared"),
    )
    for name, problem in cases:
        config = _dataset_config(str(tmp_path), name=name)
        with pytest.raises(ValueError, match=problem) as built:
            pipeline.ensure_built(config)
        with pytest.raises(ValueError, match=problem) as loaded:
            pipeline.create_eval_loader(config, batch_size=2, shard_index=0, shard_count=1)
        for info in (built, loaded):
            assert "python -m wavlejepa.prepare_dataset" in str(info.value)
            assert f"tfds build {name}" in str(info.value)


def test_ensure_built_once_and_checks_options(data_dir, tmp_path):
    config = _dataset_config(data_dir, audio_dir=wavlejepa.data.FSDD_SAMPLE_DIR)
    info_file = os.path.join(data_dir, NAME, "1.0.0", "dataset_info.json")
    mtime = os.path.getmtime(info_file)
    pipeline.ensure_built(config)  # Already there: nothing rebuilt.
    assert os.path.getmtime(info_file) == mtime
    config.validation_fraction = 0.2
    with pytest.raises(ValueError, match="validation_fraction.*0.1, 0.2"):
        pipeline.ensure_built(config)
    catalog = _dataset_config(str(tmp_path), name="speech_commands", audio_dir="/some/audio")
    with pytest.raises(ValueError, match="catalog dataset"):
        pipeline.ensure_built(catalog)


def test_quickstart_data(tmp_path):
    config = quickstart.get_config()
    config.dataset.data_dir = str(tmp_path)  # Not the user's cache.
    pipeline.ensure_built(config.dataset)
    shard = dict(shard_index=0, shard_count=1)
    eval_batches = list(
        pipeline.create_eval_loader(config.dataset, batch_size=config.batch_size, **shard)
    )
    assert len(eval_batches) >= config.dataset.eval_batches
    (batch,) = _take(
        pipeline.create_train_loader(
            config.dataset, batch_size=config.batch_size, seed=config.seed, **shard
        ),
        1,
    )
    assert batch.shape == eval_batches[0]["audio"].shape == (32, 8_160)
