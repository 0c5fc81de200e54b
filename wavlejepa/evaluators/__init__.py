"""Downstream evaluators run during training, looked up by name from `config.evals` (big_vision).

An evaluator is `evaluate(params, config) -> dict[str, float]`. A module in this package
registers it under the name a config uses to turn it on:

    from wavlejepa import evaluators

    @evaluators.register("linear_probe")
    def evaluate(params, config):  # its own knobs: config.evals.linear_probe
        ...

    config.evals.linear_probe = ml_collections.ConfigDict({...})  # in a config file

`config.evals` is empty by default; train.py calls `run_all` every `eval_every_steps`.
"""

import importlib
import pkgutil
from collections.abc import Callable

import ml_collections

Evaluator = Callable[[dict, ml_collections.ConfigDict], dict]
_REGISTRY: dict[str, Evaluator] = {}


def register(name: str) -> Callable[[Evaluator], Evaluator]:
    """Decorator: makes `fn` the evaluator `config.evals.<name>` turns on."""

    def decorator(fn: Evaluator) -> Evaluator:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"Two evaluators registered as {name!r}.")
        _REGISTRY[name] = fn
        return fn

    return decorator


def _import_modules() -> None:
    """Imports every module of this package, so each registers itself."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def names() -> list[str]:
    """The registered evaluator names."""
    _import_modules()
    return sorted(_REGISTRY)


def get(name: str) -> Evaluator:
    if name not in names():
        raise ValueError(f"No evaluator {name!r} (config.evals.{name}); registered: {names()}.")
    return _REGISTRY[name]


def run_all(params: dict, config: ml_collections.ConfigDict) -> dict[str, float]:
    """Runs every evaluator in config.evals; metrics come back as "<name>/<metric>"."""
    results = {}
    for name in config.evals:
        for key, value in get(name)(params, config).items():
            results[f"{name}/{key}"] = float(value)
    return results
