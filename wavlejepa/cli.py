"""What every command-line tool does with a user's mistake: one line on stderr, exit code 2.

Checks here run before any heavy work, so a bad flag never costs the user a finished job.
"""

import os
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


def check_workdir(path: str, flag: str = "--workdir") -> None:
    """Fails unless `path` is a folder we can write in, or can be created (local paths only:
    gs:// and other remote workdirs are left to the storage layer)."""
    if "://" in path:
        return
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full) and not os.path.isdir(full):
        fail(f"{flag}={path} is a file: give a folder (it is created if missing).")
    existing = full
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
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
    file's errors (missing file, misspelt key, bad value) as one line instead of a traceback."""
    from absl import app, flags  # Imported here: the other helpers need no absl.

    # absl's own --help exits 1; ours prints the program's docstring and flags and exits 0,
    # before anything heavy is imported (the tools import JAX in main()).
    asked = [a.split("=")[0] for a in argv[1:] if a.split("=")[0] in HELP_FLAGS]
    if asked:
        app.usage(shorthelp=asked[0] != "--helpfull", writeto_stdout=True, exitcode=0)
    try:
        rest = flags.FLAGS(argv)
        for name in list(flags.FLAGS):
            if type(flags.FLAGS[name]).__name__ == "_ConfigFlag":
                config = getattr(flags.FLAGS, name)
                if config is not None:
                    _ = config.keys  # A config file that failed to load raises here.
    except flags.Error as e:
        fail(f"{str(e).rstrip('.')}. Pass --help for the flags.")
    except KeyError as e:  # A misspelt --config.key: ml_collections' "Did you mean" message.
        fail("config has no key " + " ".join(str(a) for a in e.args).replace("\n", ". "))
    except OSError as e:  # A config file that cannot be read or run.
        cause = e.__cause__ or e
        fail(" ".join(str(cause).split()))
    except (AttributeError, ValueError, TypeError) as e:
        fail(" ".join(str(e).split()))
    return rest
