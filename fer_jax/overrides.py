"""Config values by dotted key: read (`get`), written (`put`), parsed from `--config.KEY=VALUE`
strings (`apply_flags`, as main.py's flags read them), laid over a config from a saved run's
nested dict (`overlay`), and flattened for comparison (`flat`). The one place where fer_jax
sets a config value by name: main.py's flags (ml_collections' config_flags), scripts and tests,
a study's cells (grid.py) and a checkpoint's own config (checkpoint.py) all go through here."""

from __future__ import annotations

import ast
import difflib
from typing import Any, Iterable, Mapping

import ml_collections

from fer_jax import errors


def get(config: ml_collections.ConfigDict, key: str, where: str = "") -> Any:
  """The value (or section) at dotted `key`; a ConfigError naming `where`, the key and the
  nearest name where the path breaks."""
  node, path = config, []
  for part in key.split(".") if key else ():
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      prefix = "config" + "".join(f".{p}" for p in path)
      known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      close = difflib.get_close_matches(part, known, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise errors.ConfigError(f"{where or 'config'} names {key!r}, which is not a config key: "
                               f"{prefix} has no {part!r}{hint}")
    node = node[part]
    path.append(part)
  return node


def put(config: ml_collections.ConfigDict, key: str, value: Any, where: str = "") -> None:
  """Sets dotted `key` (which must exist) to `value`, locked or not; a value that does not fit
  the key's type is a ConfigError naming `where`, the key and the type."""
  *parents, name = key.split(".")
  section = get(config, ".".join(parents), where)
  get(config, key, where)
  current = section[name]
  try:
    with section.unlocked():
      section[name] = value
  except (TypeError, ValueError):
    raise errors.ConfigError(f"{where or 'config'}: {key}={value!r} does not fit config.{key}, "
                             f"a {type(current).__name__} ({current!r} now)") from None


_TRUE, _FALSE = ("true", "t", "1"), ("false", "f", "0")  # as absl's boolean flags


def parse(text: str, current: Any, key: str = "") -> Any:
  """`text` read as a value of `current`'s type, as main.py's `--config.KEY=text` is: a bool
  from true/t/1 or false/f/0 (any case), a tuple, list or dict as a Python literal, else the type's
  constructor (int, float, str)."""
  try:
    if isinstance(current, bool):
      if text.lower() not in _TRUE + _FALSE:
        raise ValueError(f"not a bool: {text!r} (true or false)")
      return text.lower() in _TRUE
    if isinstance(current, (tuple, list, dict)):
      return type(current)(ast.literal_eval(text))
    return type(current)(text)
  except (ValueError, SyntaxError, TypeError) as e:
    raise errors.ConfigError(f"config.{key}={text!r}: {e}") from None


def apply_flags(config: ml_collections.ConfigDict, flags: Iterable[str]
                ) -> ml_collections.ConfigDict:
  """`--config.a.b=value` strings onto `config` (in place), each value parsed as its key's
  type; for scripts and tests that build configs in-process."""
  for flag in flags:
    if not flag.startswith("--config.") or "=" not in flag:
      raise errors.UsageError(f"{flag!r} is not --config.KEY=VALUE")
    key, text = flag.removeprefix("--config.").split("=", 1)
    put(config, key, parse(text, get(config, key, flag), key), flag)
  return config


def overlay(config: ml_collections.ConfigDict, saved: Mapping, prefix: str = "config"
            ) -> list[str]:
  """Writes `saved` (nested dicts, a run's config.json) onto `config` in place, lists as the
  tuples the config holds and numbers as its types; returns the keys `config` lacks (ignored)."""
  ignored = []
  for key, value in saved.items():
    if key not in config:
      ignored.append(f"{prefix}.{key}")
    elif isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
      ignored += overlay(config[key], value, f"{prefix}.{key}")
    else:
      old = config[key]
      value = tuple(value) if isinstance(value, list) and isinstance(old, tuple) else value
      try:
        config[key] = value
      except TypeError:  # e.g. an int where this version keeps a float
        config[key] = type(old)(value)
  return ignored


def plain(value: Any) -> Any:
  """Lists (JSON's, ConfigDict's) and tuples alike as tuples, all the way down, so that values
  compare and hash."""
  if isinstance(value, (list, tuple)):
    return tuple(plain(v) for v in value)
  return value


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  """A config or nested dict as {dotted key: plain value}; `prefix` names the root."""
  if isinstance(tree, (ml_collections.ConfigDict, Mapping)):
    return {k: v for key in tree.keys()
            for k, v in flat(tree[key], f"{prefix}.{key}" if prefix else key).items()}
  return {prefix: plain(tree)}
