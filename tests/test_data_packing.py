"""Tests of short_clips="pack": stretches, crops of consecutive real clips, clip starts, resume.

Real audio: the bundled FSDD sample (clips of 0.07-0.87 s at 16 kHz), crops of 0.9 s, so every
crop spans at least two clips.
"""

import gc
import math

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

import wavlejepa.data
from configs import default
from wavlejepa.data import packing, pipeline, transforms

NAME = "fsdd_sample"
CROP = 14_400  # 0.9 s at 16 kHz: longer than every FSDD sample clip.


def _dataset_config(data_dir="", **overrides):
    config = default.get_config().dataset
    config.update(
        name=NAME,
        data_dir=data_dir,
        crop_seconds=0.9,
        crops_per_clip=2,
        short_clips="pack",
        num_workers=0,
        validation_fraction=0.1,
        test_fraction=0.1,
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    pipeline.ensure_built(_dataset_config(data_dir, audio_dir=wavlejepa.data.FSDD_SAMPLE_DIR))
    return data_dir


@pytest.fixture(scope="module")
def train_clips(data_dir):
    """float64 source clips of the train split, by record index."""
    train = tfds.data_source(NAME, data_dir=data_dir, split="train")
    clips = [train[i]["audio"].astype(np.float64) / 32768 for i in range(len(train))]
    assert max(len(c) for c in clips) < CROP
    return clips


@pytest.fixture(autouse=True)
def _stop_prefetching():
    yield
    gc.collect()


def _reference_normalize(x):
    x = np.asarray(x, np.float64)
    c = x - x.mean()
    return c / np.sqrt((c * c).mean() + 1e-5)


def _train_loader(data_dir, seed, **overrides):
    config = _dataset_config(data_dir, **overrides)
    return pipeline.create_train_loader(
        config, batch_size=8, seed=seed, shard_index=0, shard_count=1
    )


def test_spread_step_is_a_permutation_with_far_neighbours():
    for n in (1, 2, 10, 30, 240, 1000):
        step = packing.spread_step(n)
        positions = np.arange(n) * step % n
        assert sorted(positions) == list(range(n)) and math.gcd(step, n) == 1
        if n >= 30:  # Consecutive items start at least a quarter of the order apart.
            gap = np.abs(np.diff(positions))
            assert np.all(np.minimum(gap, n - gap) >= n // 4)


def test_crop_clip_starts_against_a_hand_count():
    starts = np.arange(0, 2000, 100)
    got = transforms.crop_clip_starts(starts, offset=50, samples=1000)
    assert got.dtype == np.int32 and got.shape == (transforms.MAX_CLIPS_PER_CROP,)
    np.testing.assert_array_equal(got, [0, 50, 150, 250, 350, 450, 550, 650])  # 10 inside: capped.
    got = transforms.crop_clip_starts(np.array([0, 700]), offset=100, samples=500)
    np.testing.assert_array_equal(got, [0, -1, -1, -1, -1, -1, -1, -1])  # 700 is past the crop.
    got = transforms.crop_clip_starts(np.array([0, 599, 600]), offset=100, samples=500)
    np.testing.assert_array_equal(got[:3], [0, 499, -1])  # The crop is [100, 600).


def test_packed_stretches_are_consecutive_clips_of_the_shard(data_dir, train_clips):
    train = tfds.data_source(NAME, data_dir=data_dir, split="train")
    by_bytes = {c.tobytes(): i for i, c in enumerate(train_clips)}
    n = len(train_clips)
    firsts = []
    for shard in range(2):
        options = grain.sharding.ShardOptions(shard, 2, drop_remainder=False)
        packed = packing.PackedClips(
            train, audio_key="audio", crop_samples=CROP, num_crops=2, seed=5, shard_options=options
        )
        lo, hi = (0, (n + 1) // 2) if shard == 0 else ((n + 1) // 2, n)
        assert sorted(packed.order) == list(range(lo, hi))
        where = {int(i): p for p, i in enumerate(packed.order)}
        firsts.append([])
        for index in range(lo, hi):
            stretch = packed[index]
            audio, starts = stretch["audio"], stretch["clip_starts"]
            assert audio.dtype == np.float32 and audio.shape[0] >= 2 * CROP
            assert starts[0] == 0 and np.all(np.diff(starts) > 0)
            bounds = list(starts) + [len(audio)]
            ids = [
                by_bytes[audio[a:b].astype(np.float64).tobytes()]  # Exactly one source clip.
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            ]
            assert all(lo <= i < hi for i in ids)  # Only this host's clips.
            positions = [where[i] for i in ids]
            np.testing.assert_array_equal(np.diff(positions) % (hi - lo), 1)  # Consecutive.
            assert sum(len(train_clips[i]) for i in ids[:-1]) < 2 * CROP  # Stops when full.
            firsts[-1].append(ids[0])
        assert sorted(firsts[-1]) == list(range(lo, hi))  # Each clip starts one stretch.
        with pytest.raises(IndexError, match="outside this shard"):
            packed[hi % n]
    assert repr(packed).startswith("PackedClips(source=") and "seed=5" in repr(packed)


def test_long_first_clip_is_a_stretch_of_its_own():
    clips = [np.full(n, v, np.int16) for n, v in ((500, 1), (300, 2), (200, 3), (900, 4))]
    source = [{"audio": c} for c in clips]
    packed = packing.PackedClips(
        source,
        audio_key="audio",
        crop_samples=400,
        num_crops=2,
        seed=0,
        shard_options=grain.sharding.ShardOptions(0, 1),
    )
    for index in range(4):
        stretch = packed[index]
        first = int(round(stretch["audio"][0] * 32768))
        if len(clips[first - 1]) >= 400:  # The long clips, 500 and 900 samples: alone.
            assert len(stretch["audio"]) == len(clips[first - 1])
            np.testing.assert_array_equal(stretch["clip_starts"], [0])
        else:
            assert len(stretch["audio"]) >= 800 and len(stretch["clip_starts"]) > 1


def _segments(starts_row):
    starts = [int(s) for s in starts_row if s >= 0]
    return list(zip(starts, starts[1:] + [CROP], strict=True))


def _reconstruct(crop, starts_row, clips, order):
    """(order position of the crop's first clip, offset into it), checking the crop against the
    float64 normalisation of consecutive source clips (in `order`) cut at `starts_row`."""
    segments = _segments(starts_row)
    s = int(np.argmax([b - a for a, b in segments]))  # Longest segment: identify its clip.
    a, b = segments[s]
    m = b - a

    def candidates():  # Crops span two or more clips: a suffix, whole clips, then a prefix.
        for i, c in enumerate(clips):
            if s == 0 and len(c) >= m:
                yield i, c[len(c) - m :]
            elif s == len(segments) - 1 and len(c) >= m:
                yield i, c[:m]
            elif 0 < s < len(segments) - 1 and len(c) == m:
                yield i, c

    scores = [(np.corrcoef(crop[a:b], x)[0, 1], i) for i, x in candidates() if np.std(x) > 0]
    anchor = max(scores)[1]
    first = int(np.flatnonzero(order == anchor)[0]) - s
    ids = [int(order[(first + j) % len(order)]) for j in range(len(segments))]
    (a0, b0), (a1, b1) = segments[0], segments[-1]
    offset = len(clips[ids[0]]) - (b0 - a0)
    raw = np.concatenate(
        [clips[ids[0]][offset:]] + [clips[i] for i in ids[1:-1]] + [clips[ids[-1]][: b1 - a1]]
    )
    assert len(raw) == CROP
    np.testing.assert_allclose(crop, _reference_normalize(raw), atol=2e-4)
    return first % len(order), offset


def _advance(position, offset, samples, clips, order):
    offset += samples
    while offset >= len(clips[order[position % len(order)]]):
        offset -= len(clips[order[position % len(order)]])
        position += 1
    return position % len(order), offset


def test_pack_crops_are_full_windows_of_consecutive_clips(data_dir, train_clips):
    seed = 11
    train = tfds.data_source(NAME, data_dir=data_dir, split="train")
    order = packing.PackedClips(
        train,
        audio_key="audio",
        crop_samples=CROP,
        num_crops=2,
        seed=seed,
        shard_options=grain.sharding.ShardOptions(0, 1, drop_remainder=False),
    ).order  # The stream order the train loader packs clips in.
    data_iter = iter(_train_loader(data_dir, seed))
    for _ in range(3):
        batch = next(data_iter)
        assert batch["audio"].shape == (8, CROP) and batch["audio"].dtype == np.float32
        assert batch["lengths"].dtype == batch["clip_starts"].dtype == np.int32
        assert batch["clip_starts"].shape == (8, transforms.MAX_CLIPS_PER_CROP)
        np.testing.assert_array_equal(batch["lengths"], CROP)  # No padding anywhere.
        for row in batch["clip_starts"]:
            real = row[row >= 0]
            assert real[0] == 0 and np.all(np.diff(real) > 0) and np.all(row[len(real) :] == -1)
            assert len(real) >= 2  # Every clip is shorter than a crop.
        for pair in range(4):  # The two crops of a stretch: one straight after the other.
            rows = (2 * pair, 2 * pair + 1)
            got = [
                _reconstruct(batch["audio"][r], batch["clip_starts"][r], train_clips, order)
                for r in rows
            ]
            assert got[1] == _advance(*got[0], CROP, train_clips, order)
        for i in range(8):
            for j in range(i):
                assert not np.array_equal(batch["audio"][i], batch["audio"][j])


def test_pad_mode_repeats_crops_that_pack_mode_does_not(data_dir):
    modes = ("pack", "pad")
    batches = {mode: next(iter(_train_loader(data_dir, 0, short_clips=mode))) for mode in modes}
    pad = batches["pad"]["audio"]
    assert np.array_equal(pad[0], pad[1])  # A clip shorter than a crop: its crops are equal.
    assert np.all(batches["pad"]["lengths"] < CROP)
    pack = batches["pack"]["audio"]
    assert len({row.tobytes() for row in pack}) == len(pack)


def test_same_seed_same_batches_other_seed_others(data_dir):
    first, second, other = (iter(_train_loader(data_dir, s)) for s in (4, 4, 5))
    for _ in range(3):
        a, b, c = next(first), next(second), next(other)
        assert a.keys() == b.keys() == {"audio", "lengths", "clip_starts"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["audio"], c["audio"])


def test_pack_resumes_exactly_mid_stream(data_dir):
    data_iter = iter(_train_loader(data_dir, 9))
    for _ in range(5):  # Mid-epoch: 240 train clips give 60 batches of 4 stretches.
        next(data_iter)
    state = data_iter.get_state()
    expected = [next(data_iter) for _ in range(3)]
    restored = iter(_train_loader(data_dir, 9))
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    fresh = next(iter(_train_loader(data_dir, 9)))  # Without set_state the stream starts over.
    assert not np.array_equal(fresh["audio"], expected[0]["audio"])
    with pytest.raises(ValueError, match="DataSource in checkpoint"):  # Other stretches: refused.
        iter(_train_loader(data_dir, 9, crops_per_clip=1)).set_state(state)


def test_eval_stretches_in_one_batch_share_no_clip(data_dir):
    config = _dataset_config(data_dir)
    validation = tfds.data_source(NAME, data_dir=data_dir, split="validation")
    loader = pipeline.create_eval_loader(config, batch_size=4, shard_index=0, shard_count=1)
    batches = list(loader)
    assert len(batches) == len(validation) // 2  # One stretch per clip, two per batch.
    assert all(np.all(b["lengths"] == CROP) for b in batches)
    again = list(pipeline.create_eval_loader(config, batch_size=4, shard_index=0, shard_count=1))
    for a, b in zip(batches, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    packed = packing.PackedClips(
        validation,
        audio_key="audio",
        crop_samples=CROP,
        num_crops=2,
        seed=pipeline.EVAL_SEED,
        shard_options=grain.sharding.ShardOptions(0, 1, drop_remainder=True),
    )
    for first in range(0, len(validation) - 1, 2):  # The stretches of one eval batch.
        clips = [set(_clip_ids(packed[i], validation)) for i in (first, first + 1)]
        assert not clips[0] & clips[1]


def _clip_ids(stretch, source):
    bounds = list(stretch["clip_starts"]) + [len(stretch["audio"])]
    ids = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        segment = stretch["audio"][a:b]
        matches = [
            i
            for i in range(len(source))
            if len(source[i]["audio"]) == b - a
            and np.array_equal(transforms.to_float(source[i]["audio"]), segment)
        ]
        (i,) = matches
        ids.append(i)
    return ids
