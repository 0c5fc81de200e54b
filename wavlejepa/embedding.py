"""Embeds audio of any length and rate with a trained (or untrained) WavLeJEPA model.

Audio is resampled to 16 kHz, cut into windows of the training crop length, each window
normalised like a training crop, and embedded in fixed-size jitted batches whose lengths come from
a few buckets, so new clip lengths never recompile. Frame embeddings come back at 100 Hz with the
time of each frame's centre; a clip embedding is the mean of its frames.

  embedder = Embedder.from_checkpoint("/tmp/wj/run")  # or Embedder.random_init(config)
  clip_embedding = embedder.embed_one(audio, sample_rate=44_100)  # .frames, .timestamps, .clip

`embed_files` and `save_npz` do the same for files (the command line, `wavlejepa.embed`). The
.npz holds `paths [N]`, `clip [N, D]`, `frames [sum of frames, D]`, `timestamps` (seconds)
and `offsets [N + 1]` (clip i's frames are `frames[offsets[i]:offsets[i + 1]]`), and
`skipped_paths`/`skipped_reasons` for files that could not be read or are shorter than one
frame, 15 ms ("too_short"; silent files are embedded: silence is valid input). The output path is
checked before any work and written exactly as given; no file is written when nothing could be
embedded (exit code 2).
"""

import dataclasses
import functools
import math
import numbers
import os
import sys
import zipfile
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from wavlejepa import cli, model, pretrained
from wavlejepa.data import decode, pcm, transforms
from wavlejepa.nets import waveform

SAMPLE_RATE = pcm.SAMPLE_RATE  # The model's input rate.
DEFAULT_WINDOW_SECONDS = 2.01  # WavJEPA's training crop (configs/default.py): 200 frames.


def frame_times(num_frames: int, num_samples: int, cfg: ml_collections.ConfigDict) -> np.ndarray:
    """Centres of frames 0..num_frames-1 in seconds, float64 `[num_frames]`.

    Audio shorter than one frame still gets one (zero-padded) frame, placed at the audio's centre
    so that no time lies past its end.
    """
    if num_samples < waveform.receptive_samples(cfg):
        return np.full((num_frames,), num_samples / 2 / SAMPLE_RATE)
    return waveform.frame_centres(num_frames, cfg) / SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Window:
    """One model input cut from a clip: audio[start:stop], zero-padded to `bucket_frames`.

    Its local frames [keep_from, keep_to) are the clip's frames [start / hop + keep_from, ...).
    """

    start: int
    stop: int
    bucket_frames: int
    valid_frames: int  # Frames of real audio (attention ignores the padded ones).
    keep_from: int
    keep_to: int


def window_samples(frames: int, cfg: ml_collections.ConfigDict) -> int:
    """The most samples that give `frames` frames: a window takes every sample up to where the
    next frame would start, so none is dropped from its normalisation statistics (a 2.01 s crop
    of 32,159 or 32,160 samples, WavJEPA's and ours, is one window of 200 frames)."""
    return waveform.samples_for_frames(frames + 1, cfg) - 1


def plan_windows(
    num_samples: int, window_frames: int, buckets: Sequence[int], cfg: ml_collections.ConfigDict
) -> list[Window]:
    """Windows that together give every frame of a clip of `num_samples` once, in order.

    A clip of at most `window_frames` frames is one window padded to the smallest bucket that holds
    it. A longer one is cut into windows of exactly `window_frames` frames at multiples of that;
    the last is aligned to the clip's end and keeps only its new frames. Each window spans
    `window_samples` of its frames, or to the clip's end.
    """
    if num_samples < 1:
        raise ValueError("Cannot embed empty audio.")
    frames = waveform.num_frames(max(num_samples, waveform.receptive_samples(cfg)), cfg)
    hop = waveform.hop_samples(cfg)
    if frames <= window_frames:
        bucket = min(b for b in buckets if b >= frames)
        return [Window(0, min(num_samples, window_samples(bucket, cfg)), bucket, frames, 0, frames)]
    offsets = list(range(0, frames - window_frames, window_frames)) + [frames - window_frames]
    windows, done = [], 0
    for offset in offsets:
        start = offset * hop
        stop = min(num_samples, start + window_samples(window_frames, cfg))
        keep_from = done - offset
        windows.append(Window(start, stop, window_frames, window_frames, keep_from, window_frames))
        done = offset + window_frames
    return windows


def embed_windows(
    params: dict, audio_BxS: jax.Array, lengths_B: jax.Array, *, cfg: ml_collections.ConfigDict
) -> jax.Array:
    """`model.embed` where window b has only `lengths[b]` real samples (the rest padding).

    The padding is ignored as in training. Returns `[batch, frames, encoder_width]` float32.
    """
    return model.embed(params, audio_BxS, cfg, lengths_B=lengths_B).astype(np.float32)


def _local_copy(x):
    """A replicated (possibly multi-host) array -> this host's copy on one device."""
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 and x.is_fully_replicated:
        return x.addressable_data(0)
    return x


# One compiled program per (bucket, batch size, model config), shared by every Embedder.
_embed_windows_jit = jax.jit(embed_windows, static_argnames="cfg")


@dataclasses.dataclass(frozen=True)
class ClipEmbedding:
    frames: np.ndarray  # float32 [frames, dim] at 100 Hz.
    timestamps: np.ndarray  # float64 [frames]: frame centres in seconds from the clip's start.

    @property
    def clip(self) -> np.ndarray:
        """float32 [dim]: the mean of the frames."""
        return self.frames.mean(axis=0)


class Embedder:
    """Frozen params + model config -> embeddings of clips of any length, batched and jitted."""

    def __init__(
        self,
        params: dict,
        model_cfg: ml_collections.ConfigDict,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        batch_size: int = 16,
        num_buckets: int = 4,
    ):
        """
        Args:
          params: model params (`model.init` or a checkpoint's); replicated arrays are fine.
          model_cfg: `config.model` of the run.
          window_seconds: longest audio embedded at once; use the training crop length.
          batch_size: windows per jitted call (a fixed shape: partial batches are padded).
          num_buckets: window lengths compiled for short clips: window, window/2, window/4, ...
        """
        self.params = jax.tree.map(_local_copy, params)
        self.cfg = ml_collections.FrozenConfigDict(model_cfg)
        self.window_frames = waveform.num_frames(round(window_seconds * SAMPLE_RATE), self.cfg)
        self.buckets = sorted({math.ceil(self.window_frames / 2**k) for k in range(num_buckets)})
        self.batch_size = batch_size
        self.dim = int(model_cfg.encoder_width)

    @classmethod
    def from_config(cls, params: dict, config: ml_collections.ConfigDict, **kwargs) -> "Embedder":
        """The model of a run config (`config.model`, windows of `config.dataset.crop_seconds`)."""
        kwargs.setdefault("window_seconds", config.dataset.crop_seconds)
        return cls(params, config.model, **kwargs)

    @classmethod
    def from_checkpoint(cls, directory: str, step: int | None = None, **kwargs) -> "Embedder":
        """The model of a checkpoint (`pretrained.load`; raises its CheckpointError)."""
        return cls.from_config(*pretrained.load(directory, step), **kwargs)

    @classmethod
    def random_init(cls, config: ml_collections.ConfigDict, seed: int = 0, **kwargs) -> "Embedder":
        """An untrained model of a run config (the random-init baseline)."""
        params = jax.jit(functools.partial(model.init, cfg=config.model))(jax.random.key(seed))
        return cls.from_config(params, config, **kwargs)

    def embed(
        self,
        clips: Sequence[np.ndarray],
        sample_rate: int = SAMPLE_RATE,
        *,
        progress=None,
        pad_short: bool = False,
    ) -> list:
        """Embeds each clip (float `[samples]` at `sample_rate`); returns a ClipEmbedding each.

        `progress` (a tqdm bar, optional) gets the clips' windows added to its total, then moves
        by each jitted batch, so it moves within a long file too. `pad_short` embeds a clip
        shorter than one frame as one zero-padded frame instead of raising (for APIs that must
        answer every length, such as HEAR's).

        Raises:
          ValueError: a clip that is not 1-D, is a path, holds NaN or inf, or is shorter than
            one frame (`min_samples` at 16 kHz; its index named); a bare array, a two-row
            array (stereo [channels, samples] or two clips?) or a path given for `clips`; a
            `sample_rate` that is not a whole number of Hz >= 1.
        """
        clips16 = self._checked_16k(clips, sample_rate, pad_short)
        jobs = [  # (clip index, window) of every window of every clip
            (i, w)
            for i, audio in enumerate(clips16)
            for w in plan_windows(len(audio), self.window_frames, self.buckets, self.cfg)
        ]
        if progress is not None:
            progress.total = (progress.total or 0) + len(jobs)
            progress.refresh()
        outputs = self._embed_windows(clips16, jobs, progress)
        pieces = [[] for _ in clips16]
        for (i, w), out in zip(jobs, outputs, strict=True):
            pieces[i].append(out[w.keep_from : w.keep_to])
        results = []
        for audio, parts in zip(clips16, pieces, strict=True):
            frames = np.concatenate(parts, axis=0)
            results.append(ClipEmbedding(frames, frame_times(len(frames), len(audio), self.cfg)))
        return results

    def _checked_16k(
        self, clips: Sequence[np.ndarray], sample_rate, pad_short: bool
    ) -> list[np.ndarray]:
        """`clips` checked as `embed` documents, downmixed where the layout is sure, and
        resampled to 16 kHz."""
        real = isinstance(sample_rate, numbers.Real)
        if not real or sample_rate < 1 or not float(sample_rate).is_integer():
            raise ValueError(
                f"sample_rate={sample_rate!r}: give the clips' rate in Hz, a whole number >= 1 "
                "(e.g. 44100; round a measured rate with int(round(rate)))."
            )
        sample_rate = int(sample_rate)
        self._check_container(clips, sample_rate)
        clips = [self._as_mono(i, c) for i, c in enumerate(clips)]
        for i, clip in enumerate(clips):
            if not np.all(np.isfinite(clip)):
                bad = int(np.sum(~np.isfinite(clip)))
                raise ValueError(f"Sound {i} holds {bad} NaN or inf samples: clean it first.")
        clips16 = [decode.resample(c, sample_rate, SAMPLE_RATE) for c in clips]
        for i, audio in enumerate(clips16):
            if len(audio) < self.min_samples and not pad_short:
                raise ValueError(
                    f"Sound {i} lasts {1000 * len(clips[i]) / sample_rate:.1f} ms "
                    f"({len(clips[i])} samples at {sample_rate} Hz), shorter than one frame of "
                    f"the model ({self.min_samples} samples at {SAMPLE_RATE} Hz = "
                    f"{1000 * self.min_samples / SAMPLE_RATE:g} ms): leave it out or pad it to "
                    "at least that length."
                )
        return clips16

    def _embed_windows(self, clips16: list[np.ndarray], jobs: list, progress) -> list[np.ndarray]:
        """float32 `[bucket_frames, dim]` per job, run bucket by bucket in full batches."""
        outputs = [None] * len(jobs)
        for bucket in self.buckets:
            todo = [j for j, (_, w) in enumerate(jobs) if w.bucket_frames == bucket]
            samples = window_samples(bucket, self.cfg)
            for s in range(0, len(todo), self.batch_size):
                rows = todo[s : s + self.batch_size]
                audio_BxS = np.zeros((self.batch_size, samples), np.float32)  # Pad rows: silence.
                lengths_B = np.full((self.batch_size,), samples, np.int32)
                for row, j in enumerate(rows):
                    i, w = jobs[j]
                    # Each window normalised like a training crop; the padding is silence.
                    audio_BxS[row, : w.stop - w.start] = transforms.normalize(
                        clips16[i][w.start : w.stop]
                    )
                    lengths_B[row] = w.stop - w.start
                out = np.asarray(
                    _embed_windows_jit(self.params, audio_BxS, lengths_B, cfg=self.cfg)
                )
                for row, j in enumerate(rows):
                    outputs[j] = out[row]
                if progress is not None:
                    progress.update(len(rows))
        return outputs

    def embed_one(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> ClipEmbedding:
        return self.embed([audio], sample_rate)[0]

    @property
    def min_samples(self) -> int:
        """The shortest clip at 16 kHz that makes one frame (one receptive field: 15 ms)."""
        return waveform.receptive_samples(self.cfg)

    def _check_container(self, clips, sample_rate: int) -> None:
        """Raises for the usual slips: a path, one clip or one multichannel array instead of a
        list of clips (an array [clips, samples] of three or more rows is a list of clips)."""
        if isinstance(clips, (str, bytes, os.PathLike)):
            raise ValueError(
                f"embed takes audio arrays, not a path ({clips!r}): use "
                "embedding.embed_files(embedder, [path]) to read and embed files."
            )
        shape = getattr(clips, "shape", None)
        if shape is not None and len(shape) == 1:
            raise ValueError(
                f"embed takes a list of clips, not one array of shape {shape}: wrap it in a "
                "list, embed([audio]), or use embed_one(audio)."
            )
        # Rows too short for a frame: not a batch [clips, samples] but [samples, channels].
        if (
            shape is not None
            and len(shape) == 2
            and shape[1] * SAMPLE_RATE < (self.min_samples * sample_rate)
        ):
            raise ValueError(
                f"embed got one array of shape {shape}, multichannel audio [samples, "
                "channels]? Downmix it to mono and wrap it in a list: "
                "embed([audio.mean(axis=1)])."
            )
        # Two rows are stereo [channels, samples] as often as two clips: never guess.
        if shape is not None and len(shape) == 2 and shape[0] == 2:
            raise ValueError(
                f"embed got one array of shape {shape}: stereo [channels, samples] (torchaudio's "
                "layout) or two clips? For stereo, downmix it to mono and wrap it in a list: "
                "embed([audio.mean(axis=0)]); for two clips, pass a list: embed(list(audio))."
            )

    @staticmethod
    def _as_mono(i: int, clip) -> np.ndarray:
        """Clip i as float64 `[samples]`, or a ValueError naming the fix."""
        if isinstance(clip, (str, bytes, os.PathLike)):
            raise ValueError(
                f"Sound {i} is a path ({clip!r}), not audio: use "
                "embedding.embed_files(embedder, paths) to read and embed files."
            )
        audio = np.asarray(clip, np.float64)
        if audio.ndim == 2:  # The shorter axis is the channels: audio has more samples than that.
            layout, axis = (
                ("[channels, samples] (torchaudio's layout)", 0)
                if audio.shape[0] < audio.shape[1]
                else ("[samples, channels] (soundfile's layout)", 1)
            )
            raise ValueError(
                f"Sound {i} has shape {audio.shape}: the model takes mono audio [samples]; "
                f"downmix {layout} with audio.mean(axis={axis})."
            )
        if audio.ndim != 1:
            raise ValueError(f"Sound {i} has shape {audio.shape}: give mono audio [samples].")
        return audio


class _ChunkProgress:
    """What `Embedder.embed` moves instead of a bar: its windows advance a bar counted in files
    by their share of the chunk's `files`, so that bar moves within long files too."""

    def __init__(self, bar, files: int):
        self.bar, self.files, self.total = bar, files, 0  # total: the chunk's windows.

    def refresh(self) -> None:
        pass

    def update(self, windows: int) -> None:
        self.bar.update(self.files * windows / self.total)


def iter_files(embedder: Embedder, paths: Sequence[str], *, chunk: int = 32, progress=True):
    """Reads and embeds audio files, `chunk` at a time; a file `decode.decode_file` rejects is
    skipped, never fatal, as is one shorter than a frame ("too_short"). A progress bar on stderr
    counts files against all of `paths` from the start, and moves within long files.

    Yields:
      (path, ClipEmbedding, None) per embedded file and (path, None, reason) per skipped one,
      in the order of `paths`; reasons are from `decode.REASONS`.
    """
    bar = tqdm(
        total=len(paths),
        unit="file",
        disable=not progress or not sys.stderr.isatty(),  # Redraws are noise in a log file.
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} files [{elapsed}<{remaining}]",
    )
    for s in range(0, len(paths), chunk):
        audio, outcomes = [], []
        for path in paths[s : s + chunk]:
            try:
                clip = decode.decode_file(
                    path,
                    sample_rate=SAMPLE_RATE,
                    min_duration_seconds=embedder.min_samples / SAMPLE_RATE,
                    allow_silent=True,
                    keep_float=True,
                )
            except decode.BadAudioError as e:
                outcomes.append((path, e.reason))
                continue
            audio.append(clip.audio)
            outcomes.append((path, None))
        embedded = iter(embedder.embed(audio, progress=_ChunkProgress(bar, len(audio))))
        bar.update(min(s + chunk, len(paths)) - bar.n)  # Whole files: skipped ones, rounding.
        for path, reason in outcomes:
            yield (path, None, reason) if reason else (path, next(embedded), None)
    bar.close()


def embed_files(
    embedder: Embedder, paths: Sequence[str], *, chunk: int = 32, progress: bool = True
) -> tuple[list[str], list[ClipEmbedding], list[tuple[str, str]]]:
    """`iter_files`, collected: (paths embedded, their ClipEmbeddings, [(skipped path, reason)])."""
    done, results, skipped = [], [], []
    for path, result, reason in iter_files(embedder, paths, chunk=chunk, progress=progress):
        if reason:
            skipped.append((path, reason))
        else:
            done.append(path)
            results.append(result)
    return done, results, skipped


def save_clip_npz(path: str, result: ClipEmbedding) -> None:
    """One file's embedding as its own .npz (`frames`, `timestamps`, `clip`), written atomically."""
    cli.write_atomically(
        path,
        lambda f: np.savez(f, frames=result.frames, timestamps=result.timestamps, clip=result.clip),
    )


def is_embeddings_file(path: str, *, per_file: bool = False) -> bool:
    """Whether `path` is a .npz `save_npz` (per_file: `save_clip_npz`) wrote, a zip holding its
    arrays, so that replacing it loses nothing the user did not ask to replace."""
    if not os.path.isfile(path):  # A folder, or a FIFO that opening would block on.
        return False
    try:
        with zipfile.ZipFile(path) as npz:
            names = set(npz.namelist())
    except (OSError, zipfile.BadZipFile):  # Not a zip (audio, text), or unreadable.
        return False
    if per_file:
        return {"frames.npy", "timestamps.npy", "clip.npy"} <= names
    return {"paths.npy", "clip.npy", "frames.npy", "offsets.npy"} <= names


def save_npz(path: str, paths: list[str], embeddings: list, skipped: list) -> None:
    """Writes the embeddings of `embed_files` to exactly `path` (layout in the module docstring);
    a failure leaves any earlier file there as it was."""
    lengths = [len(e.frames) for e in embeddings]
    dim = embeddings[0].frames.shape[1] if embeddings else 0
    cli.write_atomically(
        path,
        lambda f: np.savez(
            f,
            paths=np.array(paths, dtype=np.str_),
            clip=np.stack([e.clip for e in embeddings]) if embeddings else np.zeros((0, dim)),
            frames=np.concatenate([e.frames for e in embeddings])
            if embeddings
            else np.zeros((0, 0)),
            timestamps=np.concatenate([e.timestamps for e in embeddings]) if embeddings else [],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            skipped_paths=np.array([p for p, _ in skipped], dtype=np.str_),
            skipped_reasons=np.array([r for _, r in skipped], dtype=np.str_),
        ),
    )
