"""Command-line flags declared by kind, so every tool checks a flag of a kind the same way.

Each `define_*` function defines an absl flag whose parser carries its kind:

- **paths** (`define_input`, `define_output`): `~` and `$VARS` expanded as the flag is parsed
  (the shell leaves them alone after `=`); `check_paths` then checks the file system once all
  flags are parsed: an input that is missing, or a file where a folder is needed (or the reverse),
  and an output whose place cannot hold it, each get one line before any work;
- **numbers** (`define_number`): a closed range in the flag's own units, whole or not; zero,
  negatives, NaN, inf and huge values are refused by the range, with the range in the message;
- **choices** (`define_choices`): a comma-separated list, each item one of the choices (one
  choice: absl's `DEFINE_enum`, which lists them);
- **text** (`define_text`): free text matching a pattern, with an example in the message.

`cli.parse_flags` runs the parse and `check_paths`, and turns each refusal into one `error:` line,
exit code 2. The tests enumerate every tool's flags by these kinds and feed each bad values.
"""

import math
import os
import re
import tempfile

from absl import flags

from wavlejepa import config_kinds

# A flag defined here through a define_* function belongs to the tool that called it (its --help).
flags.disclaim_key_flags()

INPUT_KINDS = ("file", "folder", "file_or_folder")
OUTPUT_KINDS = ("file", "folder")


def expand(value: str) -> str:
    """`value` with `~` and environment variables expanded; a variable that is not set is a
    ValueError naming it (left in, it would become a folder named `$HOME`)."""
    expanded = os.path.expanduser(os.path.expandvars(value))
    name = config_kinds.unset_variable(expanded)
    if name:
        raise ValueError(f"${name} is not set in the environment: set it, or write the path out")
    return expanded


class PathParser(flags.ArgumentParser):
    """A path flag's parser: expands it; `role` is "input" or "output", `kind` what it names."""

    def __init__(self, role: str, kind: str):
        self.role, self.kind = role, kind
        what = kind.replace("_or_", " or ")
        self.syntactic_help = f"an existing {what}" if role == "input" else f"a {what}"

    def parse(self, argument):
        if not isinstance(argument, str):
            raise TypeError(f"a path must be a string, found {type(argument).__name__}")
        if not argument:
            return argument
        if "://" in argument:  # gs:// and other remote paths are left to the storage layer.
            return argument
        return expand(argument)

    def flag_type(self) -> str:
        return "string"


class NumberParser(flags.ArgumentParser):
    """A number in [low, high], a whole number if `whole`; `unit` names what it counts."""

    def __init__(self, low: float, high: float, whole: bool, unit: str):
        self.range = config_kinds.Number(low, high, whole, unit)
        self.syntactic_help = self.range.allowed()

    def parse(self, argument):
        try:
            value = float(str(argument).strip())
        except ValueError:
            raise ValueError(f"must be {self.range.allowed()}") from None
        problem = self.range.problem(value)
        if problem:
            raise ValueError(problem)
        return int(value) if self.range.whole else value

    def flag_type(self) -> str:
        return "int" if self.range.whole else "float"


class ChoicesParser(flags.ArgumentParser):
    """A comma-separated list whose items are each one of `choices`."""

    def __init__(self, choices: tuple[str, ...]):
        self.choices = tuple(choices)
        self.syntactic_help = f"a comma-separated list of {', '.join(self.choices)}"

    def parse(self, argument):
        items = argument if isinstance(argument, list) else str(argument).split(",")
        items = [item.strip() for item in items if item.strip()]
        if not items:
            raise ValueError(f"give at least one of {', '.join(self.choices)}")
        unknown = [item for item in items if item not in self.choices]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}: choose from {', '.join(self.choices)}")
        return items

    def flag_type(self) -> str:
        return "list"


class TextParser(flags.ArgumentParser):
    """Free text that must match `pattern` in full; `example` shows a valid value."""

    def __init__(self, pattern: str, what: str, example: str):
        self.pattern, self.what, self.example = pattern, what, example
        self.syntactic_help = f"{what}, e.g. {example}"

    def parse(self, argument):
        text = str(argument)
        if not re.fullmatch(self.pattern, text):
            raise ValueError(f"must be {self.what}, e.g. {self.example}")
        return text

    def flag_type(self) -> str:
        return "string"


def _define(parser, name, default, help_, required, serializer=None):
    serializer = serializer or flags.ArgumentSerializer()
    holder = flags.DEFINE(parser, name, default, help_, serializer=serializer)
    if required:
        flags.mark_flag_as_required(name)
    return holder


def define_input(name: str, default: str | None, help_: str, *, kind: str, required=False):
    """A path the tool reads: a "file", a "folder" or either ("file_or_folder")."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {INPUT_KINDS}")
    return _define(PathParser("input", kind), name, default, help_, required)


def define_output(name: str, default: str | None, help_: str, *, kind: str, required=False):
    """A path the tool writes: a "file" (its folder must exist) or a "folder" (created)."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {OUTPUT_KINDS}")
    return _define(PathParser("output", kind), name, default, help_, required)


def define_number(
    name: str, default, help_: str, *, low: float, high: float, whole=True, unit="", required=False
):
    """A number in the closed range [low, high] (both finite), whole if `whole`."""
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"--{name}: the range [{low}, {high}] must be finite and non-empty")
    return _define(NumberParser(low, high, whole, unit), name, default, help_, required)


def define_choices(name: str, default: list[str], help_: str, *, choices, required=False):
    """A comma-separated list of items, each one of `choices`."""
    serializer = flags.CsvListSerializer(",")
    return _define(ChoicesParser(tuple(choices)), name, default, help_, required, serializer)


def define_text(name: str, default, help_: str, *, pattern: str, what: str, example: str):
    """Free text matching `pattern` (e.g. a dataset name, HOST:PORT)."""
    return _define(TextParser(pattern, what, example), name, default, help_, False)


def _input_problem(value: str, kind: str) -> str:
    if not os.path.exists(value):
        where = "" if os.path.isabs(value) else f" (relative to {os.getcwd()})"
        return f"no such {kind.replace('_or_', ' or ')}{where}"
    if kind == "file" and os.path.isdir(value):
        return "is a folder: give a file (one inside it?)"
    if kind == "folder" and not os.path.isdir(value):
        return "is a file: give a folder (the one holding it?)"
    if not os.access(value, os.R_OK):
        return "is not readable: check its permissions"
    return ""


def _output_problem(value: str, kind: str) -> str:
    full = os.path.abspath(value)
    if kind == "file":
        if os.path.isdir(full):
            return "is a folder: give a file name inside it"
        folder = os.path.dirname(full)
        if not os.path.isdir(folder):
            what = "is a file" if os.path.exists(folder) else "does not exist"
            fix = "create it first" if what == "does not exist" else "give a file in a folder"
            return f"its folder {folder} {what}: {fix}"
        if not can_write_in(folder):
            return f"its folder {folder} is not writable: choose another place"
        return ""
    if os.path.exists(full) and not os.path.isdir(full):
        return "is a file: give a folder (it is created if missing)"
    existing = full
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, so no folder can be made under it: choose another place"
    if not can_write_in(existing):
        return f"{existing} is not writable: choose another place"
    return ""


def can_write_in(folder: str) -> bool:
    """Whether a file can be made in `folder`, by making one (removed at once): permission bits
    say yes to root and on /proc-like file systems where every write fails."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def path_problems(flag_values=None) -> list[str]:
    """One message per path flag (with a value) whose file-system check fails, e.g.
    "--input=clips/: no such file or folder (relative to /home/me)"."""
    flag_values = flags.FLAGS if flag_values is None else flag_values
    problems = []
    for name in flag_values:
        flag = flag_values[name]
        parser, value = flag.parser, flag.value
        if not isinstance(parser, PathParser) or not value or "://" in value:
            continue
        check = _input_problem if parser.role == "input" else _output_problem
        problem = check(value, parser.kind)
        if problem:
            problems.append(f"--{name}={value}: {problem}.")
    return problems


def kind_of(flag) -> str:
    """The kind a flag was declared with: "input", "output", "number", "choices", "choice",
    "text", "bool", "config" (a config file), or "undeclared" (a plain absl flag)."""
    from ml_collections.config_flags import config_flags

    parser = flag.parser
    kinds: list[tuple[type, str]] = [
        (NumberParser, "number"),
        (ChoicesParser, "choices"),
        (TextParser, "text"),
        (flags.EnumParser, "choice"),
        (flags.BooleanParser, "bool"),
    ]
    if isinstance(parser, PathParser):
        return parser.role
    if config_flags.is_config_flag(flag):
        return "config"
    return next((kind for cls, kind in kinds if isinstance(parser, cls)), "undeclared")
