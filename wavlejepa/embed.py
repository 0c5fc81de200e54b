r"""Embeds a file or a folder of audio with a trained WavLeJEPA model, into one .npz.

  python -m wavlejepa.embed --checkpoint=/tmp/wj/run --input=clips/ --output=embeddings.npz
  python -m wavlejepa.embed --checkpoint=/tmp/wj/run --input=clips/ --output_dir=emb/

With --output_dir each file gets its own .npz (`frames`, `timestamps`, `clip`) at its path
relative to --input plus ".npz" (clips/sub/a.wav -> emb/sub/a.wav.npz), written as it is done;
every such path is checked before any work: only an earlier .npz of this tool is replaced, and
those are never read as audio when --output_dir is --input or inside it.

The .npz holds `paths [N]`, `clip [N, D]`, `frames [sum of frames, D]`, `timestamps` (seconds)
and `offsets [N + 1]` (clip i's frames are `frames[offsets[i]:offsets[i + 1]]`), and
`skipped_paths`/`skipped_reasons` for files that could not be read or are shorter than one
frame, 15 ms ("too_short"; silent files are embedded: silence is valid input). The output path is
checked before any work and written exactly as given; no file is written when nothing could be
embedded (exit code 2), and an existing file there is replaced only if it is an earlier .npz of this
tool (never an input). From Python, use `wavlejepa.embedding.Embedder`.
"""

import collections
import os
import sys

from absl import app, flags

from wavlejepa import cli, flag_kinds, runtime

# JAX and the model are imported in main(), after the flags: `--help` and flag errors are instant.
_CHECKPOINT = flag_kinds.define_input(
    "checkpoint", None, "Workdir or checkpoint directory.", kind="folder", required=True
)
_INPUT = flag_kinds.define_input(
    "input", None, "An audio file, or a folder searched recursively.", kind="file_or_folder",
    required=True,
)  # fmt: skip
_OUTPUT = flag_kinds.define_output(
    "output", "embeddings.npz", "Where the .npz is written.", kind="file"
)
_OUTPUT_DIR = flag_kinds.define_output(
    "output_dir", None, "Instead of --output: one .npz per input file under this folder.",
    kind="folder",
)  # fmt: skip
_BATCH_SIZE = flag_kinds.define_number(
    "batch_size", 16, "Windows per jitted call.", low=1, high=4096, unit="windows per call"
)


def _target(path: str, source: str, output_dir: str) -> str:
    """Where --output_dir puts the .npz of input `path`: its path relative to --input + ".npz"."""
    relative = os.path.relpath(path, source) if os.path.isdir(source) else os.path.basename(path)
    return os.path.join(output_dir, relative + ".npz")


def _embed_per_file(embedder, paths: list[str], source: str, output_dir: str):
    """Writes each file's .npz as soon as it is embedded; returns (done, skipped)."""
    from wavlejepa import embedding

    done, skipped = [], []
    for path, result, reason in embedding.iter_files(embedder, paths):
        if reason:
            skipped.append((path, reason))
            continue
        target = _target(path, source, output_dir)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        embedding.save_clip_npz(target, result)
        done.append(path)
    return done, skipped


def _check_targets(paths: list[str], source: str, output_dir: str) -> None:
    """Fails before any work if a .npz of --output_dir would replace anything but an earlier
    .npz of ours (an input, a file of the user's, a folder) or needs a folder where a file is."""
    from wavlejepa import embedding

    for path in paths:
        target = _target(path, source, output_dir)
        if os.path.lexists(target) and not embedding.is_embeddings_file(target, per_file=True):
            what = "is a folder" if os.path.isdir(target) else "is not an embeddings file of ours"
            cli.fail(
                f"--output_dir={output_dir}: {target} (the .npz of {path}) exists and {what}, so "
                "it would be overwritten: move it aside, or give another --output_dir."
            )
        parent = cli.existing_ancestor(os.path.dirname(target))
        if not os.path.isdir(parent):
            cli.fail(
                f"--output_dir={output_dir}: {parent} is a file where the .npz of {path} needs a "
                "folder: move it aside, or give another --output_dir."
            )


def _input_paths(source: str, output: str | None, output_dir: str | None) -> list[str]:
    """The audio files of --input, checked against --output or --output_dir before any work: an
    earlier result of ours inside --input is replaced, not read as audio; any other existing
    file is never overwritten."""
    from wavlejepa import embedding
    from wavlejepa.data import audio_folder

    earlier = output if output and embedding.is_embeddings_file(output) else ""
    if os.path.isdir(source):
        paths = [os.path.join(source, p) for p in audio_folder.list_files(source, earlier)]
    else:  # --input's kind checked that it exists.
        paths = [source]
    if output_dir:  # Inside --input, an earlier run's .npz files are results, not inputs.
        ours = os.path.realpath(output_dir) + os.sep
        paths = [
            p
            for p in paths
            if not os.path.realpath(p).startswith(ours)
            or not embedding.is_embeddings_file(p, per_file=True)
        ]
    if not paths:
        cli.fail(f"--input={source} holds no files.")
    if output and os.path.exists(output) and not earlier:
        if any(os.path.realpath(p) == os.path.realpath(output) for p in paths):
            cli.fail(
                f"--output={_OUTPUT.value} is one of the --input files and would be overwritten: "
                "give a new file name, e.g. --output=embeddings.npz outside the input."
            )
        cli.fail(
            f"--output={_OUTPUT.value} exists and is not an embeddings file of this tool, so it "
            "would be overwritten: give a new file name, or move that file aside first."
        )
    if output_dir:
        _check_targets(paths, source, output_dir)
    return paths


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runtime.set_up()
    per_file = _OUTPUT_DIR.value is not None
    if per_file and flags.FLAGS["output"].present:
        cli.fail("--output and --output_dir contradict each other: give one.")
    output = None if per_file else os.path.abspath(_OUTPUT.value)  # Checked by its kind.
    source = _INPUT.value
    from wavlejepa import checkpointing, embedding

    paths = _input_paths(source, output, _OUTPUT_DIR.value)
    try:
        embedder = embedding.Embedder.from_checkpoint(
            _CHECKPOINT.value, batch_size=_BATCH_SIZE.value
        )
    except checkpointing.CheckpointError as e:
        cli.fail(str(e))
    if per_file:
        done, skipped = _embed_per_file(embedder, paths, source, _OUTPUT_DIR.value)
    else:
        done, embeddings, skipped = embedding.embed_files(embedder, paths)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not done:
        reasons = ", ".join(
            f"{n} {r}" for r, n in collections.Counter(r for _, r in skipped).items()
        )
        cli.fail(f"no audio could be embedded from --input={source} ({reasons}); nothing written.")
    if per_file:
        where = f"{_OUTPUT_DIR.value}, one .npz each"
        print(f"Embedded {len(done)} files ({embedder.dim}-d) into {where}.")
    else:
        embedding.save_npz(output, done, embeddings, skipped)
        print(f"Embedded {len(done)} files ({embedder.dim}-d) into {output}.")
    if skipped:
        print(f"Skipped {len(skipped)} files (listed above and in the .npz's skipped_paths).")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
