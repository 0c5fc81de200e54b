"""A run's record of itself, `<workdir>/config.json`, read back as a config.

`cli.parse_flags` turns `--config=<workdir>/config.json` into `--config=<this file>:<that path>`,
so every tool takes a saved config, with `--config.key=value` overrides on top.
"""

import json

import ml_collections
from etils import epath

from wavlejepa import model_sizes

# Keys added since a run may have saved its config.json, with the value that keeps its behaviour.
ADDED_KEYS = {"keep_checkpoints_every": 0}


class SavedConfigError(ValueError):
    """A config.json that cannot be read as a config; the message names the file and the fix."""


def _from_json(value):
    """JSON's objects as ConfigDicts and its lists as the tuples a config file holds (so the
    config compares equal to the run's, and `--config.key=...` can override them)."""
    if isinstance(value, dict):
        return ml_collections.ConfigDict({key: _from_json(v) for key, v in value.items()})
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


def load(path: str) -> ml_collections.ConfigDict:
    """The config saved at `path`, local or remote (JSON as a run writes it: ints, floats,
    bools, strings, lists and nested objects; JSON keeps ints and floats apart, so each key
    keeps its type).

    Raises:
      SavedConfigError: the file cannot be read, is not JSON, or is not an object of keys.
    """
    try:
        text = epath.Path(path).read_text(encoding="utf-8")
    # Not only OSError: epath raises KeyError for a scheme it does not know, and remote storage
    # its own errors (TensorFlow's on gs://). Each is named in the message, not swallowed.
    except Exception as e:
        cause = (str(e).strip().splitlines() or [""])[0][:200]
        raise SavedConfigError(
            f"{path}: cannot read it ({type(e).__name__}: {cause}); give a readable config.json."
        ) from None
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as e:
        raise SavedConfigError(
            f"{path}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno}). A run writes its "
            "config.json whole: fix that line, or pass the config file (.py) the run was "
            "started with."
        ) from None
    if not isinstance(saved, dict):
        raise SavedConfigError(
            f"{path} holds a JSON {type(saved).__name__}, not a config: a run's config.json "
            "is one object of config keys."
        )
    return with_added_keys(_from_json(saved))


def with_added_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A config as a run saved it (config.json, or a checkpoint's config item), with the keys
    added since filled in: ADDED_KEYS, and the model's form keys (`model_sizes.FORM_DEFAULTS`)."""
    for key, value in ADDED_KEYS.items():
        if key not in config:
            config[key] = value
    if isinstance(config.get("model"), ml_collections.ConfigDict):
        config.model = model_sizes.with_form_defaults(config.model)
    return config


def get_config(path: str) -> ml_collections.ConfigDict:
    """ml_collections' entry point: `--config=<this file>:<path to a config.json>`."""
    return load(path)
