"""Every flag of every tool, fed bad values by its kind: one `error:` line, exit 2, nothing
written. The flags come from absl's registry, so a new flag is covered without a row for it; a
flag declared without a kind (a plain DEFINE_string) fails here until it gets one."""

import json
import os
import subprocess
import sys

import pytest

from tests import cli_helpers
from wavlejepa import cli

TOOLS = (
    "wavlejepa.main",
    "wavlejepa.prepare_dataset",
    "wavlejepa.embed",
    "wavlejepa.evaluate",
    "wavlejepa.plot",
    "wavlejepa.param_count",
    "wavlejepa.diagnostics",
    "wavlejepa.import_wavjepa",
    "research.learning",
    "research.anchor_learning",
    "research.anchor_compare",
    "research.dominant_direction",
    "research.segment_probe",
    "research.segment_compare",
    "research.wavjepa_parity",
)  # research.init_health has no flags of its own: it uses research.learning's.
# One process per tool, so that its import (TensorFlow, JAX) is paid once: it prints the tool's
# own flags (absl's registry: those its module defined) with their kinds on a line "FLAGS ...",
# reads the cases [[argv...], ...] built from them as one line of stdin, and runs each through the
# tool's own parse (cli.parse_flags: every kind check runs there) from a fresh parse, printing
# (exit code, stderr) per case on a line "CASES ...". The process-level behaviour is checked by a
# real run per tool.
_FLAGS_THEN_CASES = """
import contextlib, importlib, io, json, os, sys, traceback
from absl import flags
from wavlejepa import cli, flag_kinds
name = sys.argv[1]
module = importlib.import_module(name)
getattr(module, "_define_flags", lambda: None)()
rows = []
for flag in flags.FLAGS.get_key_flags_for_module(name):
    parser, row = flag.parser, {"name": flag.name, "kind": flag_kinds.kind_of(flag)}
    row["default"] = flag.default if isinstance(flag.default, str | int | float | list) else None
    if row["kind"] in ("input", "output"):
        row["path"] = parser.kind
    elif row["kind"] == "number":
        r = parser.range
        row.update(low=r.low, high=r.high, whole=r.whole, open_low=r.open_low)
    elif row["kind"] in ("choice", "choices"):
        row["choices"] = list(getattr(parser, "choices", None) or parser.enum_values)
    elif row["kind"] == "text":
        row["example"] = parser.example
    rows.append(row)
every = {f.name: f for f in map(flags.FLAGS.__getitem__, flags.FLAGS)}  # Short names too.
missing = [  # Input flags, of this tool or adopted, whose default path is not on this machine.
    {"name": f.name, "kind": "input", "path": f.parser.kind}
    for f in every.values()
    if flag_kinds.kind_of(f) == "input" and isinstance(f.default, str) and f.default
    and not os.path.exists(os.path.expanduser(f.default))
]
print("FLAGS " + json.dumps([rows, missing]), flush=True)
out = []
for argv in json.loads(sys.stdin.readline()):
    flags.FLAGS.unparse_flags()
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            cli.parse_flags([name, *argv])
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc(file=err)
            code = -1
    out.append([code, err.getvalue()])
print("CASES " + json.dumps(out), flush=True)
"""
_UNSET = "$WAVLEJEPA_TEST_UNSET_VARIABLE"


def _tree(root) -> dict[str, str]:
    """{path: sha256, or "folder"} of everything under `root`: new empty folders count too."""
    folders = {str(p.relative_to(root)): "folder" for p in root.rglob("*") if p.is_dir()}
    return {**folders, **cli_helpers.file_hashes(root)}


class _ToolProcess:
    """The tool's process of _FLAGS_THEN_CASES: `rows` its flags; `cases(argvs)` their parses."""

    def __init__(self, tool: str, cwd, env: dict, stderr_path):
        self._stderr_path = stderr_path
        with open(stderr_path, "w") as stderr:  # A file: a full pipe would block the child.
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _FLAGS_THEN_CASES, tool],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.rows, self.missing_defaults = self._read("FLAGS ", self._proc.stdout)

    def cases(self, argvs: list[list[str]]) -> list:
        out, _ = self._proc.communicate(json.dumps(argvs) + "\n", timeout=600)
        assert self._proc.returncode == 0, self._stderr_path.read_text()[-3000:]
        return self._read("CASES ", out.splitlines())

    def _read(self, prefix: str, lines) -> list:
        for line in lines:
            if line.startswith(prefix):
                return json.loads(line[len(prefix) :])
        self._proc.kill()
        raise AssertionError(f"no {prefix!r}line: " + self._stderr_path.read_text()[-3000:])


def _places(root) -> dict[str, str]:
    """The files and folders a case points at, under `root`."""
    (root / "a_folder").mkdir(parents=True)
    (root / "a_file.wav").write_bytes(b"RIFF not really audio")
    return {
        "folder": str(root / "a_folder"),
        "file": str(root / "a_file.wav"),
        "missing": str(root / "missing"),
    }


def _valid(row: dict, places: dict) -> str | None:
    """A value its kind accepts (given to each flag that has no default), or None."""
    kind = row["kind"]
    if kind == "input":
        return places["file"] if row["path"] == "file" else places["folder"]
    if kind == "output":
        return os.path.join(places["folder"], "out.npz" if row["path"] == "file" else "out")
    if kind == "config":
        return os.path.join(cli_helpers.REPO, "configs", "cpu_debug.py")
    if kind == "number":
        return str(int(row["low"]) + 1 if row["open_low"] else row["low"])
    if kind == "text":
        return row["example"]
    return None


def _bad_values(row: dict, places: dict) -> list[str]:
    """Values its kind refuses, each a mistake a user makes."""
    kind = row["kind"]
    if kind == "input":
        wrong = {"file": [places["folder"]], "folder": [places["file"]]}.get(row["path"], [])
        return [places["missing"], "~/wavlejepa_no_such_path", f"{_UNSET}/x", *wrong]
    if kind == "output":
        under_a_file = os.path.join(places["file"], "out")
        if row["path"] == "file":
            missing_parent = os.path.join(places["missing"], "out.npz")
            return [places["folder"], missing_parent, under_a_file, f"{_UNSET}/out.npz"]
        return [places["file"], under_a_file, f"{_UNSET}/out"]
    if kind == "number":
        low, high = row["low"], row["high"]
        values = ["nan", "inf", "-inf", "abc", "", f"{high * 10 + 1:g}", f"{low - 1:g}"]
        values += ["0", "-1"] if low > 0 else ["-1"] if low == 0 else []
        if row["whole"]:
            values.append(f"{low + 0.5:g}")
        if row["open_low"]:
            values.append(f"{low:g}")
        return values
    if kind == "choice":
        return ["bogus"]
    if kind == "choices":
        return ["bogus", f"{row['choices'][0]},bogus", ""]
    if kind == "text":
        return ["has a space", ""]
    if kind == "bool":
        return ["maybe"]
    if kind == "config":
        missing = os.path.join(places["missing"], "config.py")
        return [missing, places["folder"], "~/wavlejepa_no_such_config.py", f"{_UNSET}/c.py"]
    return []


def _cwd(tool: str, tmp_path):
    """Where a user runs the tool: research tools from the repository (their defaults are
    relative to it), the others from a folder of their own."""
    return cli_helpers.REPO if tool.startswith("research.") else tmp_path / "tree"


def _refused(code, stderr: str, name: str) -> bool:
    lines = stderr.strip().splitlines()
    return (
        code == cli.USAGE_ERROR
        and len(lines) == 1
        and lines[0].startswith("error: ")
        and f"--{name}" in lines[0]
        and "Traceback" not in stderr
    )


@pytest.mark.parametrize("tool", TOOLS)
def test_every_flag_refuses_bad_values_in_one_line_and_writes_nothing(tool, tmp_path):
    places = _places(tmp_path / "tree")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "JAX_COMPILATION_CACHE_DIR": ""}
    before = _tree(tmp_path / "tree")
    process = _ToolProcess(
        tool,
        cwd=_cwd(tool, tmp_path),
        env={**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        stderr_path=tmp_path / "stderr.txt",
    )
    rows = process.rows
    assert rows, f"{tool} defines no flags of its own: is it still a tool?"
    undeclared = [row["name"] for row in rows if row["kind"] == "undeclared"]
    assert not undeclared, f"{tool}: declare the kind of {undeclared} with flag_kinds.define_*"
    valid = {row["name"]: _valid(row, places) for row in rows if row["default"] in (None, "")}
    # A default that points into the development setup (../shared) is absent from a user's
    # clone: such a flag gets a valid value too, so that each case is refused for its own flag.
    valid.update({row["name"]: _valid(row, places) for row in process.missing_defaults})
    cases = []  # (flag name, argv)
    for row in rows:
        others = [f"--{n}={v}" for n, v in valid.items() if n != row["name"] and v is not None]
        for bad in dict.fromkeys(_bad_values(row, places)):
            cases.append((row["name"], [*others, f"--{row['name']}={bad}"]))
    assert len({name for name, _ in cases}) == len(rows)  # Every flag gets bad values.

    results = process.cases([argv for _, argv in cases])
    failures = [
        (argv[-1], code, stderr[-600:])
        for (name, argv), (code, stderr) in zip(cases, results, strict=True)
        if not _refused(code, stderr, name)
    ]
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(map(str, failures))
    assert _tree(tmp_path / "tree") == before

    # A real run of the tool with its first case: the exit code, one line, no file written.
    name, argv = cases[0]
    result = cli_helpers.run_module(tool, *argv, cwd=_cwd(tool, tmp_path), env=env)
    assert _refused(result.returncode, result.stderr, name), (argv[-1], result.stderr)
    assert "Traceback" not in result.stdout
    assert _tree(tmp_path / "tree") == before, argv[-1]
