"""A study's grid (`config.study`, fer_jax/modes/study.py runs it): its cells, seeds and
name, checked, and each run's ordinary config. Pure: no files, no training; `validation.validate`
checks a study config through `plan` before anything is prepared.

    config.study.axes = (("loss.margin", (0.0, 0.01, 0.03)),)  # (dotted key, values) pairs
    config.study.combine = "cross"  # cross: every combination of the axes' values
    #                                 zip: the i-th value of every axis together
    config.study.seeds = (0, 1, 2)  # each cell is run once per seed (config.seed)
    config.study.labels = ()  # optional: one folder-safe name per cell, in cell order
    config.study.name = "study"  # the summary files' name: WORKDIR/<name>.csv, .md, .png, .json

(the rest of the section, and every default: `defaults.study_section`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import pathlib
import re
from typing import Any

import ml_collections

from fer_jax import defaults
from fer_jax import errors
from fer_jax import overrides as overrides_lib

COMBINES = ("cross", "zip")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,-]*")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a study: a cell (its folder name and overrides) and a seed."""
  cell: str
  overrides: tuple[tuple[str, Any], ...]
  seed: int

  @property
  def name(self) -> str:
    """The run's folder, relative to the study's WORKDIR."""
    return f"{self.cell}/seed={self.seed}"

  def describe(self) -> str:
    return " ".join([f"{k}={format_value(v)}" for k, v in self.overrides]
                    + [f"seed={self.seed}"])


def format_value(value: Any) -> str:
  """A value as folder names, tables and the log show it: 0.01, face+eyes, none."""
  if isinstance(value, (tuple, list)):
    return "+".join(format_value(v) for v in value)
  if isinstance(value, float):
    return repr(value)
  return str(value)


def section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.study laid over its defaults (`defaults.study_section`): every key there."""
  if "study" not in config or not isinstance(config.study, ml_collections.ConfigDict):
    raise errors.ConfigError("--mode=study needs a study config: config.study is missing (its "
                             "axes, combine, seeds; see configs/studies/margin.py)")
  return defaults.study_section(**config.study.to_dict())


def cells(config: ml_collections.ConfigDict) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
  """The study's cells in order, as (folder name, ((key, value), ...)); validates the axes,
  combine and labels, naming the offending key or value."""
  study = section(config)
  axes = study.axes
  if isinstance(axes, ml_collections.ConfigDict):
    raise errors.ConfigError(
        "config.study.axes must be a tuple of (dotted key, values) pairs, e.g. "
        "(('loss.margin', (0.0, 0.03)),): ConfigDict field names cannot hold dots")
  pairs = []
  for entry in axes or ():
    if not isinstance(entry, (tuple, list)) or len(entry) != 2 or not isinstance(entry[0], str):
      raise errors.ConfigError(
          f"config.study.axes: {entry!r} is not a (dotted key, values) pair")
    key, values = entry
    if key == "seed":
      raise errors.ConfigError(
          "config.study.axes names 'seed': give the seeds as config.study.seeds")
    if key == "study" or key.startswith("study."):
      raise errors.ConfigError(
          f"config.study.axes names {key!r}: the study section cannot be an axis")
    if any(key == k for k, _ in pairs):
      raise errors.ConfigError(f"config.study.axes names {key!r} twice")
    current = overrides_lib.get(config, key, "config.study.axes")
    if isinstance(current, ml_collections.ConfigDict):
      raise errors.ConfigError(f"config.study.axes names {key!r}, a section: name one of its "
                               f"keys ({', '.join(current.keys())})")
    if not isinstance(values, (tuple, list)) or not values:
      raise errors.ConfigError(f"config.study.axes: {key!r} needs a non-empty tuple of values, "
                               f"got {values!r}")
    pairs.append((key, tuple(overrides_lib.plain(v) for v in values)))

  combine = study.combine
  if combine not in COMBINES:
    raise errors.ConfigError(f"config.study.combine must be one of {COMBINES}, got {combine!r}")
  keys = [k for k, _ in pairs]
  if combine == "zip":
    lengths = {k: len(v) for k, v in pairs}
    if len(set(lengths.values())) > 1:
      raise errors.ConfigError(
          "config.study.combine='zip' needs axes of equal length: " + ", ".join(
              f"{k} has {n} value{'s' * (n != 1)}" for k, n in lengths.items()))
    combos = list(zip(*(v for _, v in pairs))) if pairs else [()]
  else:
    combos = list(itertools.product(*(v for _, v in pairs)))

  labels = tuple(study.labels or ())
  if labels and len(labels) != len(combos):
    raise errors.ConfigError(
        f"config.study.labels has {len(labels)} names for {len(combos)} cells")
  out, seen = [], {}
  for i, combo in enumerate(combos):
    overrides = tuple(zip(keys, combo))
    if labels:
      name = str(labels[i])
      if not _SAFE.fullmatch(name):
        raise errors.ConfigError(f"config.study.labels: {name!r} is not a folder name (letters,"
                                 f" digits and . _ + = , - only, not starting with . or -)")
    else:
      name = ",".join(f"{k}={format_value(v)}" for k, v in overrides) or "base"
      name = re.sub(r"[^A-Za-z0-9._+=,-]", "_", name)
    if name in seen:
      raise errors.ConfigError(
          f"config.study: cells {seen[name]} and {overrides} would share the folder {name!r}"
          + ("" if labels else "; give config.study.labels"))
    seen[name] = overrides
    out.append((name, overrides))
  return out


def study_name(config: ml_collections.ConfigDict) -> str:
  """config.study.name (default "study"), checked: the stem of the study's summary files."""
  name = section(config).name or "study"
  if not isinstance(name, str) or not _SAFE.fullmatch(name):
    raise errors.ConfigError(f"config.study.name must be a file name (letters, digits and "
                             f". _ + = , - only, not starting with . or -), got {name!r}")
  return name


def seeds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """config.study.seeds, checked: a non-empty tuple of distinct integers."""
  value = section(config).seeds
  if isinstance(value, int) and not isinstance(value, bool):
    value = (value,)
  if not isinstance(value, (tuple, list)) or not value:
    raise errors.ConfigError(
        f"config.study.seeds must be a non-empty tuple of integers, got {value!r}")
  for s in value:
    if not isinstance(s, int) or isinstance(s, bool):
      raise errors.ConfigError(f"config.study.seeds: {s!r} is not an integer seed")
  if len(set(value)) != len(value):
    raise errors.ConfigError(f"config.study.seeds repeats a seed: {tuple(value)}")
  return tuple(value)


def plan(config: ml_collections.ConfigDict) -> list[Run]:
  """Every run of the study, seed-major (every cell's first seed first); each run's config is
  built once here, so a value that does not fit its key fails before anything trains."""
  study_name(config)
  runs = [Run(name, overrides, seed) for seed in seeds(config)
          for name, overrides in cells(config)]
  for run in runs[:len(runs) // len(seeds(config))]:
    run_config(config, run)
  return runs


def run_config(config: ml_collections.ConfigDict, run: Run,
               workdir: str | None = None) -> ml_collections.ConfigDict:
  """The ordinary config of `run`: `config` without its study section, with the run's
  overrides and seed; `data.tfds_dir=""` becomes WORKDIR/tfds (shared by the study's runs)."""
  cfg = copy.deepcopy(config)
  with cfg.unlocked():
    if "study" in cfg:
      del cfg["study"]
  for key, value in run.overrides:
    overrides_lib.put(cfg, key, value, f"config.study cell {run.cell!r}")
  overrides_lib.put(cfg, "seed", run.seed, "config.study.seeds")
  if workdir is not None and not cfg.data.tfds_dir:
    overrides_lib.put(cfg, "data.tfds_dir", str(pathlib.Path(workdir) / "tfds"), "--workdir")
  return cfg
