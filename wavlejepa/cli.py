"""What every command-line tool does with a user's mistake: one line on stderr, exit code 2.

Checks here run before any heavy work, so a bad flag never costs the user a finished job.
"""

import os
import re
import sys
from typing import NoReturn

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


def check_output_file(path: str, flag: str) -> str:
    """The absolute path `--flag=path` will be written to, after checking it can be: its folder
    exists and is writable, and the path itself is not a folder. Fails with a message if not."""
    if not path:
        fail(f"{flag} is empty: give the file to write.")
    full = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(full)
    if os.path.isdir(full):
        fail(f"{flag}={path} is a folder: give a file name inside it.")
    if not os.path.isdir(folder):
        fail(f"{flag}={path}: the folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        fail(f"{flag}={path}: the folder {folder} is not writable; choose another place.")
    return full


def existing_ancestor(path: str) -> str:
    """`path` (absolute, user expanded) if something is there, else its nearest parent that
    exists: where a folder to be created would hang."""
    existing = os.path.abspath(os.path.expanduser(path))
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    return existing


def check_workdir(path: str, flag: str = "--workdir") -> None:
    """Fails unless `path` is a folder we can write in, or can be created (local paths only:
    gs:// and other remote workdirs are left to the storage layer)."""
    if "://" in path:
        return
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full) and not os.path.isdir(full):
        fail(f"{flag}={path} is a file: give a folder (it is created if missing).")
    existing = existing_ancestor(full)
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{flag}={path}: {existing} is not writable; choose another folder.")


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
        fail(f"{e.filename}:{e.lineno}: syntax error in the config file: {e.msg}. Fix that line.")
    except flags.Error as e:
        fail(_group_override(argv, names) or f"{str(e).rstrip('.')}. Pass --help for the flags.")
    except KeyError as e:  # A misspelt --config.key: ml_collections' "Did you mean" message.
        fail("config has no key " + " ".join(str(a) for a in e.args).replace("\n", ". "))
    except OSError as e:  # A config file that cannot be read or run.
        cause = e.__cause__ or e
        fail(" ".join(str(cause).split()))
    except AttributeError as e:
        fail(_missing_get_config(e) or " ".join(str(e).split()))
    except (ValueError, TypeError) as e:
        fail(" ".join(str(e).split()))
    return rest


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
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(full):
        where = "" if os.path.isabs(path) else f", relative to {os.getcwd()}"
        fail(
            f"--{name}={path}: No such file (looked for {full}{where}). Give the path of a "
            f"config file from here{_configs_folder()}, or a run's <workdir>/config.json."
        )
    if os.path.isdir(full):
        fail(f"--{name}={path} is a folder: give a config file in it (.py, or a config.json).")
    if not full.endswith(".json"):
        return value
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
