"""What every command-line tool does with a user's mistake: one line on stderr, exit code 2.

Checks here run before any heavy work, so a bad flag never costs the user a finished job.
"""

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Callable
from typing import NoReturn

from wavlejepa import config_kinds, flag_kinds

USAGE_ERROR = 2  # The exit code of a bad flag or input (absl's own flag errors give 1).
# The exit code of a run stopped by a non-finite loss or gradient (train.py raises
# FloatingPointError, having saved nothing of the bad step): the input was accepted, the run
# diverged; lower the learning rate or check the audio, then run the same command again.
NON_FINITE = 3
HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull")


def fail(message: str) -> NoReturn:
    """Prints `error: message` to stderr and exits with USAGE_ERROR (no traceback)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def existing_ancestor(path: str) -> str:
    """`path` (absolute, user expanded) if something is there, else its nearest parent that
    exists: where a folder to be created would hang."""
    existing = os.path.abspath(os.path.expanduser(path))
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    return existing


@contextlib.contextmanager
def outputs(*paths: str, keep: Callable[[], bool] = lambda: False):
    """Runs the block; when it fails (an exception, or an exit code other than 0 and NON_FINITE),
    undoes what it did to `paths`: removes each path that did not exist before, with the folders
    made to hold it; in a folder that did, removes the entries that were not there and puts back
    the files beside them it rewrote (a run's config.json). Unless `keep()` says they hold work
    worth keeping (a new checkpoint). So a tool that fails leaves the disk as it found it,
    whatever step failed. Remote paths are left alone."""
    local = [os.path.abspath(os.path.expanduser(p)) for p in paths if p and "://" not in p]
    made = [(full, existing_ancestor(full)) for full in local if not os.path.lexists(full)]
    listed = {full: set(os.listdir(full)) for full in local if os.path.isdir(full)}
    saved = {path: _read_small(path) for full in listed for path in _files_in(full)}
    try:
        yield
    except BaseException as e:
        code = e.code if isinstance(e, SystemExit) else 1
        if code not in (0, None, NON_FINITE) and not keep():
            for full, ancestor in made:
                _remove_made(full, ancestor)
            for full, before in listed.items():
                for entry in set(os.listdir(full)) - before:
                    _remove_made(os.path.join(full, entry), full)
            for path, content in saved.items():
                if content is not None and _read_small(path) != content:
                    write_atomically(path, lambda f, content=content: f.write(content))
        raise


_MAX_RESTORED_BYTES = 16 << 20  # Files put back by `outputs`: records, not checkpoints.


def _files_in(folder: str) -> list[str]:
    return [e.path for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]


def _read_small(path: str) -> bytes | None:
    """The bytes of a file up to _MAX_RESTORED_BYTES, else None (too large, or gone)."""
    try:
        if os.path.getsize(path) <= _MAX_RESTORED_BYTES:
            with open(path, "rb") as f:
                return f.read()
    except OSError:
        pass
    return None


def _remove_made(path: str, ancestor: str) -> None:
    """Removes `path` (a file or a folder tree), then its parents up to `ancestor` (which existed
    before), each only if nothing else is in it."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)
    parent = os.path.dirname(path)
    while parent != ancestor and parent.startswith(ancestor) and os.path.isdir(parent):
        try:
            os.rmdir(parent)
        except OSError:  # Something else is in it.
            break
        parent = os.path.dirname(parent)


def write_atomically(path: str, write) -> None:
    """Calls `write(file)` on a temporary file beside `path`, then renames it to `path`, so a
    failure leaves any earlier file at `path` untouched."""
    partial = f"{path}.partial"
    try:
        with open(partial, "wb") as f:
            write(f)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing for `app.run(main, flags_parser=cli.parse_flags)`, with a config
    file's errors (missing file, syntax error, misspelt key, bad value) as one line instead of a
    traceback, and a run's saved config.json taken as a config file."""
    from absl import app, flags  # Imported here: the other helpers need no absl.

    # absl's own --help exits 1; ours prints the program's docstring and flags and exits 0,
    # before anything heavy is imported (the tools import JAX in main()).
    asked = [a.split("=")[0] for a in argv[1:] if a.split("=")[0] in HELP_FLAGS]
    if asked:
        app.usage(shorthelp=asked[0] != "--helpfull", writeto_stdout=True, exitcode=0)
    names = _config_flag_names(flags.FLAGS)
    argv = _with_config_files(argv, names)
    try:
        rest = flags.FLAGS(argv)
        for name in names:
            config = getattr(flags.FLAGS, name)
            if config is not None:
                _ = config.keys  # A config file that failed to load raises here.
    except SyntaxError as e:  # Raised by running the config file: absl does not catch it.
        if e.filename is None:  # Not text at all (an audio file, a checkpoint).
            fail(f"the config file is not Python source ({e.msg}): give a .py config file.")
        fail(f"{e.filename}:{e.lineno}: syntax error in the config file: {e.msg}. Fix that line.")
    except flags.Error as e:
        fail(_group_override(argv, names) or _flag_error(e))
    except KeyError as e:  # A misspelt --config.key: ml_collections' "Did you mean" message.
        fail("config has no key " + " ".join(str(a) for a in e.args).replace("\n", ". "))
    except OSError as e:  # A config file that cannot be read or run.
        cause = e.__cause__ or e
        fail(" ".join(str(cause).split()))
    except AttributeError as e:
        fail(_missing_get_config(e) or " ".join(str(e).split()))
    except (ValueError, TypeError) as e:
        fail(" ".join(str(e).split()))
    problems = flag_kinds.path_problems()
    if problems:
        fail(problems[0])
    return rest


def _flag_error(error) -> str:
    """absl's message for a bad flag as our one line: "--batch_size=0: must be ..."."""
    message = " ".join(str(error).split()).rstrip(".")
    message = re.sub(r"^flag (--\S+?=)", r"\1", message)
    required = re.search(r"Flag --(\w+) must have a value other than None", message)
    if required:
        return f"--{required.group(1)} is required: give it (--help describes it)."
    override = re.match(r"(--\w+\.([\w.]+)=\S*): ", message)
    kind = override and config_kinds.KINDS.get(override.group(2))
    if isinstance(kind, config_kinds.Number | config_kinds.Numbers):  # Not parsed as a number.
        allowed = kind.allowed() if isinstance(kind, config_kinds.Number) else kind.item.allowed()
        return f"{override.group(1)}: must be {allowed}."
    return f"{message}. Pass --help for the flags."


def _config_flag_names(flag_values) -> list[str]:
    """The names of the config-file flags (`config_flags.DEFINE_config_file`) defined."""
    from ml_collections.config_flags import config_flags

    return [name for name in flag_values if config_flags.is_config_flag(flag_values[name])]


def _with_config_files(argv: list[str], names: list[str]) -> list[str]:
    """`argv` with each config flag's file checked (fails in one line if it is missing or a
    folder) and a run's saved config.json given as `saved_config.py:<its path>`, the form
    ml_collections loads (it would run a .json as Python)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        for name in names:
            if re.fullmatch(rf"--?{re.escape(name)}", arg) and i + 1 < len(argv):
                argv[i + 1] = _config_file(name, argv[i + 1])
            elif re.match(rf"--?{re.escape(name)}=", arg):
                flag, value = arg.split("=", 1)
                argv[i] = f"{flag}={_config_file(name, value)}"
    return argv


def _config_file(name: str, value: str) -> str:
    """The value of `--name=value` to give ml_collections, after checking the file exists."""
    if "://" in value:  # A remote file: only a saved config.json is read here.
        return _saved_config(name, value) if value.endswith(".json") else value
    path, _, argument = value.partition(":")
    if not path:
        fail(f"--{name} is empty: give a config file, e.g. --{name}=configs/cpu_debug.py.")
    try:
        full = os.path.abspath(flag_kinds.expand(path))
    except ValueError as e:
        fail(f"--{name}={path}: {e}.")
    if not os.path.exists(full):
        where = "" if os.path.isabs(path) else f", relative to {os.getcwd()}"
        fail(
            f"--{name}={path}: No such file (looked for {full}{where}). Give the path of a "
            f"config file from here{_configs_folder()}, or a run's <workdir>/config.json."
        )
    if os.path.isdir(full):
        fail(f"--{name}={path} is a folder: give a config file in it (.py, or a config.json).")
    if not full.endswith(".json"):
        return f"{full}:{argument}" if argument else full  # `~` and $VARS expanded.
    if argument:
        fail(f"--{name}={value}: a config.json takes no ':{argument}'; drop it.")
    return _saved_config(name, full)


def _saved_config(name: str, path: str) -> str:
    """`saved_config.py:<path>`, the config file that loads the config.json at `path`, after
    checking that it loads (ml_collections would wrap its error in a traceback)."""
    from wavlejepa import saved_config  # Imported here: it needs ml_collections.

    try:
        saved_config.load(path)
    except saved_config.SavedConfigError as e:
        fail(str(e))
    return f"{saved_config.__file__}:{path}"


def _configs_folder() -> str:
    """`(the project's configs are in <repo>/configs)` where that folder exists, else ""."""
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    return f" (the project's configs are in {folder}/)" if os.path.isdir(folder) else ""


def _missing_get_config(error: AttributeError) -> str:
    """The message for a config file that defines no get_config(), or "" for another error."""
    module = getattr(error, "obj", None)
    if getattr(error, "name", None) != "get_config" or not hasattr(module, "__file__"):
        return ""
    return (
        f"{module.__file__} defines no get_config(): a config file defines get_config() "
        "returning an ml_collections.ConfigDict (see configs/cpu_debug.py, which builds on "
        "configs/default.py)."
    )


def _group_override(argv: list[str], names: list[str]) -> str:
    """The message for `--config.group=value` where config.group is a group of keys (absl's is
    "Failed to parse as a ConfigDict"), naming the key meant; "" when no override is one."""
    from absl import flags

    for name in names:
        for arg in argv[1:]:
            match = re.match(rf"--?{re.escape(name)}\.([\w.]+)=(.*)", arg)
            group = _group_at(flags.FLAGS[name].value, match.group(1)) if match else None
            if group is None:
                continue
            path, value = f"{name}.{match.group(1)}", match.group(2)
            keys = list(group.keys())
            hint = next((k for k in ("size", "name") if k in keys), None)
            listed = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") or "none yet"
            fix = f"e.g. --{path}.{hint}={value}" if hint else f"--{path}.KEY={value}"
            return (
                f"--{path}={value}: {path} is a group of keys, not a value; set one of its "
                f"keys, {fix} (its keys: {listed})."
            )
    return ""


def _group_at(config, dotted: str):
    """The ConfigDict at `config.<dotted>`, or None when that is a value or no key."""
    from ml_collections import ConfigDict

    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, ConfigDict) else None
    return config if isinstance(config, ConfigDict) else None
