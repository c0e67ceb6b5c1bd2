"""Every config value checked once, where the config enters (`validate`), before any data is
prepared or any model is built: a typo costs a second, not a dataset preparation or a compile.

The rules are tables, one entry per key: `RANGES` (numbers and their allowed interval),
`CHOICES` (enumerations, read from the registries they select from), then the cross-key checks
of `CHECKS`. Every float anywhere in the config must be finite. A new key with a range or a
choice is one more entry here; the error names the dotted key, its value and what it takes.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import ml_collections

from fer_jax.data import crops as crops_lib
from fer_jax.data import labels as labels_lib
from fer_jax.data import landmarks as landmarks_lib
from fer_jax.data import mixing
from fer_jax import errors
from fer_jax import grid
from fer_jax import losses
from fer_jax.models import backbones
from fer_jax.models import branch_attention
from fer_jax.models import lowering
from fer_jax.models import resnet
from fer_jax.predict import detectors
from fer_jax import state as state_lib


_MISSING = object()


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return _MISSING
    node = node[part]
  return node


# key -> (lowest, highest, whether the lowest is allowed, whether the highest is allowed)
INF = math.inf
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "batch_size": (1, INF, True, False),
    "eval_batch_size": (1, INF, True, False),
    "num_epochs": (0, INF, True, False),  # 0 only with num_train_steps (_data)
    "log_every_steps": (0, INF, True, False),  # 0: at the last step only
    "eval_every_epochs": (0, INF, False, False),
    "keep_checkpoints": (1, INF, True, False),
    "optimizer.learning_rate": (0, INF, False, False),
    "optimizer.momentum": (0, 1, True, False),
    "optimizer.weight_decay": (0, INF, True, False),
    "optimizer.decay_epochs": (0, INF, False, False),
    "optimizer.decay_factor": (0, 1, False, True),
    "optimizer.warmup_epochs": (0, INF, True, False),
    "optimizer.grad_clip_norm": (0, INF, True, False),
    "optimizer.ema_decay": (0, 1, True, False),
    # mu lies in (0, 1): a margin below 0 makes the hinge identically 0, one above 1 makes it
    # always active.
    "loss.margin": (0, 1, True, True),
    "loss.constraint_weight": (0, INF, True, False),
    "loss.aux_weight": (0, INF, True, False),
    "model.width": (0, INF, False, False),
    "model.temperature": (0, INF, False, False),
    "model.attention_hidden": (1, INF, True, False),
    "model.bn_momentum": (0, 1, True, False),
    "model.part_size": (0, INF, True, False),
    "data.holdout": (0, 0.5, True, False),
    "data.mix_alpha": (0, INF, False, False),
    "data.worker_count": (0, INF, True, False),
    "data.prefetch": (0, INF, True, False),
    "data.crops.size": (4, INF, True, False),
    "data.crops.pad": (0, INF, True, False),
    "data.crops.min_box": (0, 1, False, True),
    "data.crops.occlude_face": (0, 1, True, True),
    "data.crops.max_rotation": (0, 180, True, True),
    "data.crops.max_scale": (0, 1, True, False),
    "data.crops.max_shift": (0, 1, True, False),
    "lowering.small_map_pixels": (0, INF, True, False),
    "predict.frame_stride": (1, INF, True, False),
    "predict.min_face_size": (0, INF, True, False),
    "predict.detect_face_size": (0, INF, True, False),
    "predict.max_faces": (1, INF, True, False),
    "predict.batch_size": (1, INF, True, False),
    "predict.detect_every": (1, INF, True, False),
    "predict.iou_threshold": (0, 1, False, True),
    "predict.follow_weight": (0, 1, True, True),
    "predict.max_track_gap": (0, INF, True, False),
    "predict.window_s": (0, INF, False, False),
    "predict.min_group": (1, INF, True, False),
    "predict.min_face_fraction": (0, 1, True, False),
    "study.budget_s": (0, INF, True, False),
    "multihost.num_processes": (1, INF, True, False),
    "multihost.process_id": (0, INF, True, False),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "data.landmarks": tuple(landmarks_lib.SOURCES),
    "data.label_mode": labels_lib.LABEL_MODES,
    "data.source": ("grain", "memory"),
    "data.crops_on": ("device", "host"),
    "data.mix": tuple(mixing.MIXES),
    "data.crops.occluder_fill": crops_lib.OCCLUDER_FILLS,
    "model.backbone": tuple(backbones.BACKBONES),
    "model.stem": resnet.STEMS,
    "model.fusion": branch_attention.FUSIONS,
    "model.dtype": ("float32", "bfloat16"),
    "lowering.branch_axis": lowering.BRANCH_AXES,
    "lowering.conv_impl": ("auto",) + lowering.CONV_IMPLS,
    "lowering.small_conv_impl": lowering.CONV_IMPLS,
    "loss.classification": ("auto",) + tuple(losses.CLASSIFICATION),
    "optimizer.schedule": tuple(state_lib.SCHEDULES),
    "predict.landmarks": tuple(landmarks_lib.SOURCES),
    "predict.detector": ("auto",) + tuple(detectors.DETECTORS),
    "predict.flip": ("photos", "checkpoint", "on", "off"),
    "occlusion.landmarks": ("refit", "oracle"),
}


def _finite(config: ml_collections.ConfigDict, prefix: str = "config") -> None:
  """Every float of the config, tuples included, is finite."""
  for key in config.keys():
    value, name = config[key], f"{prefix}.{key}"
    if isinstance(value, ml_collections.ConfigDict):
      _finite(value, name)
      continue
    flat = value if isinstance(value, (tuple, list)) else (value,)
    for v in flat:
      for x in (v if isinstance(v, (tuple, list)) else (v,)):
        if isinstance(x, float) and not math.isfinite(x):
          raise errors.ConfigError(f"{name} must be a finite number, got {value!r}")


def _ranges(config: ml_collections.ConfigDict) -> None:
  for key, (lo, hi, lo_ok, hi_ok) in RANGES.items():
    value = _get(config, key)
    if value is _MISSING:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise errors.ConfigError(f"config.{key} must be a number, got {value!r}")
    ok = (lo <= value if lo_ok else lo < value) and (value <= hi if hi_ok else value < hi)
    if not ok:
      interval = (f"in {'[' if lo_ok else '('}{lo:g}, {hi:g}{']' if hi_ok else ')'}"
                  if hi != INF else f"{'>=' if lo_ok else '>'} {lo:g}")
      raise errors.ConfigError(f"config.{key} must be {interval}, got {value!r}")


def _choices(config: ml_collections.ConfigDict) -> None:
  for key, allowed in CHOICES.items():
    value = _get(config, key)
    if value is not _MISSING and value not in allowed:
      raise errors.ConfigError(f"config.{key} must be one of {', '.join(allowed)}, got {value!r}")


def _model(config: ml_collections.ConfigDict) -> None:
  """The backbone's own settings (ResNet depths), the part size and the branch weights'
  constraint against the branches."""
  m = config.model
  if m.backbone == "resnet" and m.depth not in resnet.STAGE_SIZES:
    raise errors.ConfigError(f"config.model.depth must be one of "
                      f"{', '.join(map(str, sorted(resnet.STAGE_SIZES)))} for a resnet, "
                      f"got {m.depth!r}")
  state_lib.part_branches(config)
  state_lib.constraint_indices(config)
  chosen = tuple(m.inference_branches)
  branches = tuple(config.data.crops.branches)
  for name in chosen:
    if name not in branches:
      raise errors.ConfigError(f"config.model.inference_branches names {name!r}, which is not in "
                        f"config.data.crops.branches {branches}")
  if chosen and not config.loss.aux_weight > 0:
    raise errors.ConfigError(f"config.model.inference_branches={chosen} classifies with the "
                      "branches' own classifiers, which only multi-view training has: set "
                      "config.loss.aux_weight > 0")


def _crops(config: ml_collections.ConfigDict) -> None:
  state_lib.crop_config(config).validate()


def _data(config: ml_collections.ConfigDict) -> None:
  if "num_epochs" in config and config.num_epochs <= 0 and config.num_train_steps <= 0:
    raise errors.ConfigError(f"config.num_epochs must be > 0 (or config.num_train_steps set), got "
                      f"{config.num_epochs!r}")
  d = config.data
  if d.source == "memory" and d.crops_on != "device":
    raise errors.ConfigError("config.data.source='memory' gathers and crops each batch inside the "
                      "step: it needs config.data.crops_on='device', got "
                      f"{d.crops_on!r}")
  if d.mix != "none" and losses.classification_kind(
      d.label_mode, config.loss.classification) != "cross_entropy":
    raise errors.ConfigError(f"config.data.mix={d.mix!r} mixes the targets into distributions: it "
                             "needs the cross_entropy loss, got label_mode "
                             f"{d.label_mode!r} with loss.classification "
                             f"{config.loss.classification!r}")
  sizes = tuple(d.train_sizes)
  for pair in sizes:
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
        or float(pair[0]) <= 0 or int(pair[1]) < 4):
      raise errors.ConfigError("config.data.train_sizes must be ((until_epoch, size), ...) with "
                        f"epochs > 0 and sizes >= 4, got {sizes}")
  epochs = [float(p[0]) for p in sizes]
  if epochs != sorted(set(epochs)):
    raise errors.ConfigError(f"config.data.train_sizes' epochs must increase, got {sizes}")


def _as_config_error(check: Callable[[ml_collections.ConfigDict], None]):
  """A check whose lower-level ValueError/KeyError becomes a errors.ConfigError (one line)."""
  def wrapped(config):
    try:
      check(config)
    except errors.ConfigError:
      raise
    except (ValueError, KeyError) as e:
      message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
      raise errors.ConfigError(str(message)) from None
    except AttributeError as e:  # a config file not built on fer_jax.defaults.get_config()
      raise errors.ConfigError(f"the config lacks a key fer_jax reads ({e}): start config files "
                               f"from fer_jax.defaults.get_config()") from None
  return wrapped


def check_values(config: ml_collections.ConfigDict) -> None:
  """The table-driven checks alone (finite floats, `RANGES`, `CHOICES`), for a config that holds
  only some sections (prediction's options: `ConfigDict(predict=...)`); keys it lacks are
  skipped."""
  _finite(config)
  _ranges(config)
  _choices(config)


def _study(config: ml_collections.ConfigDict) -> None:
  """A study config's `study` section: its grid (fer_jax/grid.py: axes, combine, seeds,
  labels, name) and every cell's run config, so that a value that cannot work in the last
  cell fails now, not hours later."""
  if "study" not in config:
    return
  runs = grid.plan(config)
  for run in runs[:len(runs) // len(grid.seeds(config))]:
    try:
      validate(grid.run_config(config, run))
    except errors.ConfigError as e:
      raise errors.ConfigError(f"study run {run.cell}: {e}") from None


CHECKS: tuple[Callable[[ml_collections.ConfigDict], None], ...] = (
    check_values, _as_config_error(_crops), _as_config_error(_model), _as_config_error(_data),
    _study)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises errors.ConfigError on the first value that cannot work; returns `config` otherwise."""
  for check in CHECKS:
    check(config)
  return config
