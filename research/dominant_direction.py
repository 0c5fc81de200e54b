r"""What the dominant directions of a run's embeddings encode: speaker, digit, loudness, length,
speech, position.

  python -m research.dominant_direction --fsdd_dir=../shared/data/fsdd/recordings \
      --run=/tmp/ours_run --json=dominant.json

--run is a workdir of `research.learning` (its checkpoints/) or of `research.anchor_learning`
(its snapshots/, read as WavJEPA's network). Its random init (step 0) and its last step are
embedded, one pass over every FSDD clip, and two sets of embeddings are taken apart:

- **pooled**: the mean-pooled clip embeddings of every clip. Their principal directions (the
  first --directions of them), each with its share of the variance and, for the clips' scores
  along it, the share of their variance that each clip property explains: speaker and digit
  (eta squared, the between-group share); loudness (dB of the clip's RMS), length (log
  seconds), speech (the share of its 10 ms stretches within 30 dB of its loudest) and
  brightness (log of its spectral centroid) (R squared of a straight-line fit).
- **frames**: every frame of the test-take clips. Their first principal direction, and the share
  of the frames' scores along it explained by the clip (eta squared over clips), the speaker,
  the frame's loudness (dB of the RMS of the samples it sees) and its position in its clip
  (the fraction of the clip before it) and its spectral centroid (R squared), and whether it is
  speech (within 30 dB of its clip's loudest frame; eta squared).

A share of 1 means the direction is that property and nothing else; a share near 0, that it
carries none of it. For scale, the same linear probes as research.learning's are fitted on the
clip properties alone (log length; log length and loudness). Prints a table per step and writes
every number to --json.
"""

import functools
import os

import numpy as np
from absl import app, logging

from benchmarks import common
from configs import quickstart
from research import anchor_learning, learning
from wavlejepa import checkpointing, cli, flag_kinds, pretrained
from wavlejepa.data import fsdd
from wavlejepa.evaluators import linear_probe
from wavlejepa.nets import waveform

_RUN = flag_kinds.define_input(
    "run", None, "A workdir of research.learning or anchor_learning.", kind="folder", required=True
)
_DIRECTIONS = flag_kinds.define_number(
    "directions", 3, "Principal directions of pooled embeddings.", low=1, high=16, unit="directions"
)
# --fsdd_dir, --batch_size and --json are research.learning's flags.

LOUDNESS_FLOOR = 1e-5  # RMS under this (-100 dBFS) reads as -100 dB: digital silence.


def decibels(x: np.ndarray) -> np.ndarray:
    """20 log10 of an RMS, floored at LOUDNESS_FLOOR."""
    return 20.0 * np.log10(np.maximum(x, LOUDNESS_FLOOR))


def eta_squared(scores_N: np.ndarray, groups_N: np.ndarray) -> float:
    """The share of the scores' variance between the groups' means (1: the group says it all)."""
    scores = np.asarray(scores_N, np.float64)
    total = np.square(scores - scores.mean()).sum()
    if not total > 0:
        return float("nan")
    between = sum(
        (groups_N == g).sum() * (scores[groups_N == g].mean() - scores.mean()) ** 2
        for g in np.unique(groups_N)
    )
    return float(between / total)


def r_squared(scores_N: np.ndarray, x_N: np.ndarray) -> float:
    """The share of the scores' variance a straight line in x explains (squared correlation)."""
    scores, x = np.asarray(scores_N, np.float64), np.asarray(x_N, np.float64)
    if not (scores.std() > 0 and x.std() > 0):
        return float("nan")
    return float(np.corrcoef(scores, x)[0, 1] ** 2)


def principal(x_NxD: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(share of the total variance of each of the first k principal directions [k], the rows'
    scores along them [N, k]), from the centred rows' covariance."""
    x = np.asarray(x_NxD, np.float64)
    x = x - x.mean(axis=0)
    eigenvalues, vectors = np.linalg.eigh(x.T @ x / max(len(x) - 1, 1))
    order = np.argsort(eigenvalues)[::-1][:k]
    total = max(float(np.clip(eigenvalues, 0, None).sum()), 1e-300)
    return np.clip(eigenvalues[order], 0, None) / total, x @ vectors[:, order]


SPEECH_RANGE_DB = 30.0  # A stretch within this of its clip's loudest reads as speech.
SPEECH_HOP, SPEECH_WINDOW = 160, 240  # 10 ms stretches of 15 ms: the small model's frames.


def is_speech(loudness_db: np.ndarray) -> np.ndarray:
    """Which stretches of one clip (dB RMS each) are within SPEECH_RANGE_DB of its loudest."""
    return loudness_db >= loudness_db.max() - SPEECH_RANGE_DB


def stretch_loudness(clip: np.ndarray, num: int, hop: int, field: int) -> np.ndarray:
    """dB RMS of `num` stretches [hop * t, hop * t + field) of a clip (a frame's samples)."""
    return decibels(np.array([np.sqrt(np.mean(np.square(clip[t * hop : t * hop + field])))
                              for t in range(num)]))  # fmt: skip


def centroid(x: np.ndarray) -> float:
    """log10 of the power spectrum's centroid in Hz (high for hiss and fricatives, low for
    voiced sound); 0 for digital silence."""
    power = np.square(np.abs(np.fft.rfft(x)))
    if not power.sum() > 0:
        return 0.0
    hz = np.fft.rfftfreq(len(x), 1 / fsdd.SAMPLE_RATE)
    return float(np.log10(max((hz * power).sum() / power.sum(), 1.0)))


def clip_properties(split: dict) -> dict[str, np.ndarray]:
    """Per clip of a split {"audio", "speaker", "digit"}: speaker, digit, loudness (dB RMS),
    length (log10 seconds), speech (the share of its 10 ms stretches that `is_speech`) and
    `centroid`."""
    audio = split["audio"]
    hops = [max(1, (len(a) - SPEECH_WINDOW) // SPEECH_HOP + 1) for a in audio]
    return {
        "speaker": np.asarray(split["speaker"]),
        "digit": np.asarray(split["digit"]),
        "loudness": decibels(np.array([np.sqrt(np.mean(np.square(a))) for a in audio])),
        "length": np.log10([len(a) / fsdd.SAMPLE_RATE for a in audio]),
        "speech": np.array(
            [
                is_speech(stretch_loudness(a, n, SPEECH_HOP, SPEECH_WINDOW)).mean()
                for a, n in zip(audio, hops, strict=True)
            ]
        ),  # fmt: skip
        "centroid": np.array([centroid(a) for a in audio]),
    }


def frame_properties(audio: list[np.ndarray], frames: list[np.ndarray], speakers, cfg) -> dict:
    """Per frame of the clips: its clip, speaker, loudness (dB RMS of the samples in its receptive
    field), position (the fraction of its clip's frames before it), speech (`is_speech`) and
    the `centroid` of those samples."""
    hop, field = waveform.hop_samples(cfg), waveform.receptive_samples(cfg)
    out = {"clip": [], "speaker": [], "loudness": [], "position": [], "speech": [], "centroid": []}
    for i, (clip, f) in enumerate(zip(audio, frames, strict=True)):
        n = len(f)
        loudness = stretch_loudness(clip, n, hop, field)
        out["clip"].append(np.full(n, i))
        out["speaker"].append(np.full(n, speakers[i]))
        out["loudness"].append(loudness)
        out["position"].append(np.arange(n) / max(n - 1, 1))
        out["speech"].append(is_speech(loudness))
        out["centroid"].append([centroid(clip[t * hop : t * hop + field]) for t in range(n)])
    return {k: np.concatenate(v) for k, v in out.items()}


CATEGORICAL = ("speaker", "digit", "clip", "speech")


def explain(scores_N: np.ndarray, properties: dict) -> dict[str, float]:
    """{property: the share of the scores' variance it explains}."""
    return {
        name: eta_squared(scores_N, v) if name in CATEGORICAL else r_squared(scores_N, v)
        for name, v in properties.items()
    }


def all_clip_properties(data: dict) -> dict[str, dict[str, np.ndarray]]:
    """`clip_properties` of every split of `data`, and of all clips in split order ("all")."""
    props = {s: clip_properties(data[s]) for s in learning.SPLITS}
    every = {k: np.concatenate([props[s][k] for s in learning.SPLITS]) for k in props["test"]}
    return props | {"all": every}


def analyse(frames: dict, data: dict, clips: dict, cfg, k: int) -> dict:
    """The pooled and frame analyses (module docstring) of frames {split: [[frames, dim]]}, with
    `clips` the properties of every clip in split order (`all_clip_properties(data)["all"]`)."""
    pooled = np.stack([f.mean(axis=0) for s in learning.SPLITS for f in frames[s]])
    shares, scores = principal(pooled, k)
    test = frames["test"]
    frame_share, frame_scores = principal(np.concatenate(test), 1)
    props = frame_properties(data["test"]["audio"], test, data["test"]["speaker"], cfg)
    return {
        "pooled": [
            {"share": float(shares[i]), **explain(scores[:, i], clips)} for i in range(len(shares))
        ],
        "frames": {"share": float(frame_share[0]), **explain(frame_scores[:, 0], props)},
    }


PROPERTY_FEATURES = {"length": ("length",), "length+loudness": ("length", "loudness")}


def property_probes(data: dict, props: dict, heldout: str, probe_cfg) -> dict:
    """The probes' test accuracies on clip properties alone, {features: {task: accuracy}}: what
    a direction that is only these could give them. `props`: `all_clip_properties(data)`."""
    out = {}
    for name, keys in PROPERTY_FEATURES.items():
        features = {
            s: np.stack([props[s][k] for k in keys], 1).astype(np.float32) for s in learning.SPLITS
        }
        score = functools.partial(linear_probe.score, features, data, probe_cfg=probe_cfg)
        heldout_score = linear_probe.score_heldout_speaker(features, data, heldout, probe_cfg)
        out[name] = {
            "digits": score(task="fsdd_digits")["test_accuracy"],
            "speakers": score(task="fsdd_speakers")["test_accuracy"],
            "heldout_digits": heldout_score["test_accuracy"],
        }
    return out


def encoders(workdir: str) -> list[tuple[int, dict, object]]:
    """[(step, params, config)] of a run's random init and its last step."""
    snapshots = os.path.join(workdir, "snapshots")
    if os.path.isdir(snapshots):  # research.anchor_learning: the peer's student, as WavJEPA's.
        names = sorted(n for n in os.listdir(snapshots) if n.endswith(".npz"))
        if not names:
            raise ValueError(f"{snapshots} holds no step_*.npz: has the run been probed?")
        chosen = (names[0], names[-1])
        return [
            (int(n.removeprefix("step_").removesuffix(".npz")),
             *anchor_learning.encoder(os.path.join(snapshots, n), quickstart.get_config()))
            for n in chosen
        ]  # fmt: skip
    ckpt_dir = os.path.join(workdir, checkpointing.LATEST_DIR)
    saved = [int(n) for n in os.listdir(ckpt_dir) if n.isdigit()] if os.path.isdir(ckpt_dir) else []
    if not saved:
        raise ValueError("no snapshots/ or checkpoints/<step> in it: give a run's workdir.")
    last = max(saved)
    params, config = pretrained.load(ckpt_dir, last)
    return [(0, learning.initial_params(config), config), (last, params, config)]


def _shares(d: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in d.items())


def table(name: str, step: int, result: dict) -> str:
    """One run and step's analysis as text."""
    lines = [f"{name}, step {step}"]
    for i, d in enumerate(result["pooled"]):
        lines.append(f"  pooled direction {i + 1}: {_shares(d)}")
    lines.append(f"  frames direction 1: {_shares(result['frames'])}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    data = fsdd.load_fsdd(os.path.abspath(learning._FSDD_DIR.value))
    try:
        steps = encoders(os.path.abspath(_RUN.value))
    except (ValueError, OSError, checkpointing.CheckpointError) as e:
        cli.fail(f"--run={_RUN.value}: {' '.join(str(e).split())}")
    probe_cfg = linear_probe.default_config()
    out = {"run": _RUN.value, "fsdd_dir": learning._FSDD_DIR.value, "steps": {}}
    props = all_clip_properties(data)
    out["property_probes"] = property_probes(data, props, learning._HELDOUT.value, probe_cfg)
    print("Probes on clip properties alone:", out["property_probes"])
    for step, params, config in steps:
        frames_fn = linear_probe.model_frames(params, config, learning._BATCH_SIZE.value)
        frames = {s: frames_fn(data[s]["audio"]) for s in learning.SPLITS}
        result = analyse(frames, data, props["all"], config.model, _DIRECTIONS.value)
        out["steps"][str(step)] = result
        print(table(os.path.basename(_RUN.value.rstrip("/")), step, result))
    if learning._JSON.value:
        common.write_json(learning._JSON.value, out, indent=1)
        logging.info("Wrote %s", learning._JSON.value)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
