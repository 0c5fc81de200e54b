"""Run a module as a fresh install of wavlejepa would: a top-level import whose installed
distribution is not among wavlejepa's declared dependencies (followed through their own
requirements and the extras asked for, but not wavlejepa's extras) fails as if it were missing.

    python tests/declared_imports.py MODULE ARGS...   # as `python -m MODULE ARGS...`

A package that happens to be on a developer's or CI's machine (a test extra, a leftover) would
otherwise hide a dependency that only a new user's machine lacks: tfds 4.9.10 imports the
importlib_resources backport when it builds a dataset, and declares it only for Python < 3.9.
Standard-library modules, and modules no distribution claims (this checkout's own), pass. So
does a module a library first looks for with `importlib.util.find_spec` (how several probe for
an optional package): on a fresh install that probe would find nothing and the library would do
without, which a refusal here cannot reproduce, so such a module is let through rather than
failing the probe itself.
"""

import importlib.abc
import importlib.metadata
import importlib.util
import runpy
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "wavlejepa"


def declared(root: str = ROOT) -> set[str]:
    """Canonical names of `root` and every distribution it requires, transitively, with the
    extras each requirement asks for; `root`'s own extras are not followed."""
    seen: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(root), "")]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # Declared but not installed: importing it fails on its own.
        for line in requires:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate({"extra": extra}):
                continue
            todo.append((canonicalize_name(req.name), ""))
            todo.extend((canonicalize_name(req.name), e) for e in req.extras)
    return {name for name, _ in seen}


class UndeclaredImportBlocker(importlib.abc.MetaPathFinder):
    """Refuses a top-level import that only undeclared distributions provide."""

    def __init__(self, allowed: set[str]):
        self.allowed = allowed
        self.owners = importlib.metadata.packages_distributions()
        self.refused: list[str] = []
        self.probed: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        if "." in fullname or fullname in sys.stdlib_module_names or fullname in self.probed:
            return None
        owners = {canonicalize_name(d) for d in self.owners.get(fullname, ())}
        if owners and not owners & self.allowed:
            if _called_from_util_find_spec():
                self.probed.add(fullname)
                return None
            self.refused.append(fullname)
            raise ModuleNotFoundError(
                f"No module named {fullname!r} in a fresh install: it comes from "
                f"{', '.join(sorted(owners))}, which {ROOT}'s dependencies do not declare",
                name=fullname,
            )
        return None


def _called_from_util_find_spec() -> bool:
    """Whether the import system was asked by `importlib.util.find_spec` (not by an import)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is importlib.util.find_spec.__code__:
            return True
        frame = frame.f_back
    return False


def main(argv: list[str]) -> None:
    blocker = UndeclaredImportBlocker(declared())
    sys.meta_path.insert(0, blocker)
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
