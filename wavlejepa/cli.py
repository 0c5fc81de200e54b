"""What every command-line tool does with a user's mistake: one line on stderr, exit code 2.

Checks here run before any heavy work, so a bad flag never costs the user a finished job.
"""

import os
import sys
from typing import NoReturn

USAGE_ERROR = 2  # The exit code of a bad flag or input (absl's own flag errors give 1).


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
