"""What every command-line tool does with a user's mistake: one line on stderr, exit code 2.

Checks here run before any heavy work, so a bad flag never costs the user a finished job.
"""

import asyncio
import logging
import os
import sys
from typing import NoReturn

USAGE_ERROR = 2  # The exit code of a bad flag or input (absl's own flag errors give 1).
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


def quiet_orbax_logs() -> None:
    """Hides orbax's INFO lines (dozens per save or load) so a program's own lines stay readable."""
    from absl import logging as absl_logging

    logger = absl_logging.get_absl_logger()
    if not any(isinstance(f, _OrbaxInfoFilter) for f in logger.filters):
        logger.addFilter(_OrbaxInfoFilter())


class _OrbaxInfoFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


class _QuietClosingLoop(asyncio.SelectorEventLoop):
    """An event loop that drops callbacks scheduled after it closed, instead of raising.

    When orbax fails to restore one array (a truncated checkpoint), `asyncio.run` closes its loop
    while TensorStore's other reads are still in flight; each then calls `call_soon_threadsafe`
    on the closed loop, and TensorStore prints a "RuntimeError: Event loop is closed" traceback
    from its own thread, a hundred of them per checkpoint. Nothing waits for those results.
    """

    def call_soon_threadsafe(self, callback, *args, context=None):
        if self.is_closed():
            return None
        return super().call_soon_threadsafe(callback, *args, context=context)


class _QuietClosingLoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return _QuietClosingLoop()


def quiet_closed_event_loops() -> None:
    """New asyncio loops (orbax's) drop late TensorStore callbacks (`_QuietClosingLoop`)."""
    if not isinstance(asyncio.get_event_loop_policy(), _QuietClosingLoopPolicy):
        asyncio.set_event_loop_policy(_QuietClosingLoopPolicy())


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache, so a second run of a tool does not compile
    again: $JAX_COMPILATION_CACHE_DIR when set (JAX reads it itself), else
    $XDG_CACHE_HOME/wavlejepa/jax (~/.cache/wavlejepa/jax). Returns the folder."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    cache_home = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    folder = os.path.join(cache_home, "wavlejepa", "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    return folder


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
    # JAX logs at INFO that it found no TPU on every machine without one.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    quiet_orbax_logs()
    quiet_closed_event_loops()
    enable_compilation_cache()
    return rest
