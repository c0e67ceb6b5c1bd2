"""Orbax checkpoints in WORKDIR/checkpoints: save, resume, best-on-validation.

Each checkpoint step holds three items:
- `state`: the train state (global arrays, written collectively by every process);
- `data`: the grain iterator's position, one file per process;
- `meta`: JSON with the step, the validation metrics of that step (if any) and the config.

Kept: the last `keep` checkpoints and the best on validation accuracy. Orbax writes each step
into a temporary folder and renames it when complete, so a run killed mid-save leaves no
partial checkpoint behind: `latest_step` only ever sees whole ones.

A step whose files were damaged later (truncated arrays, garbage metadata) raises
`errors.DamagedCheckpointError` naming the step and its folder. `restore_first` tries steps in order
of preference and skips damaged ones with a warning: training resumes from the newest step that
restores, and moves the damaged newer ones to WORKDIR/damaged_checkpoints/ (so that the run can
write those steps again and the retention policy never deletes them); eval and predict use the
newest (or best) good step, and fail on a damaged step only when it was asked for by number.
Nothing is deleted.

A released model's folder (`fer_jax/weights/NAME`, made by `release.write`) is read here too
(`is_release`, `load_release`), so that eval and predict take either; release.py imports this
module, never the other way.

`load_checkpoint` rebuilds the model a checkpoint holds from the run's own config (its `meta`
item, else WORKDIR/config.json, laid over `fer_jax.defaults`), for `--mode=eval` and
`--mode=predict`: the user's config never has to repeat the run's architecture.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import shutil
from typing import Any, Callable, Mapping, TypeVar

from absl import logging
import grain.checkpoint as grain_ckpt
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
import tensorstore as ts

from fer_jax import defaults
from fer_jax import errors
from fer_jax import overrides
from fer_jax import parallel
from fer_jax import state as state_lib

policies = ocp.checkpoint_managers
T = TypeVar("T")
DAMAGED_DIR = "damaged_checkpoints"


def verify_arrays(mgr: ocp.CheckpointManager, step: int) -> None:
  """Reads every stored value of the `state` item of `step` once, synchronously; a value that
  does not read (a truncated or missing data file) raises errors.DamagedCheckpointError.

  Orbax restores the arrays concurrently on an asyncio loop: when one read fails, the loop is
  closed while the others are still in flight, and each of those prints a traceback ("Event
  loop is closed") as it finishes, on a run that then recovers and succeeds. Checking the
  files first keeps a damaged step away from Orbax. Only OCDBT stores (Orbax's default) are
  checked; the check reads the step once more (0.05 s for the test model's 0.6 MB)."""
  path = pathlib.Path(mgr.directory) / str(step) / "state"
  if not (path / "manifest.ocdbt").exists():
    return
  try:
    store = ts.KvStore.open({"driver": "ocdbt", "base": {
        "driver": "file", "path": f"{path.resolve()}/"}}).result()
    for key in store.list().result():
      store.read(key).result()
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DamagedCheckpointError(mgr.directory, step, e) from None


def manager(workdir: str, keep: int = 3, read_only: bool = False,
            async_save: bool = True) -> ocp.CheckpointManager:
  """The CheckpointManager of a run (created if absent unless `read_only`)."""
  directory = pathlib.Path(workdir).resolve() / "checkpoints"
  if read_only and not directory.exists():
    raise FileNotFoundError(f"no checkpoints in {directory}: train first "
                            f"(python main.py --mode=train --workdir={workdir} ...)")
  preserve = policies.AnyPreservationPolicy([
      policies.LatestN(max(keep, 1)),
      policies.BestN(get_metric_fn=lambda m: m["accuracy"], reverse=False, n=1,
                     keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preserve, create=not read_only, read_only=read_only,
      cleanup_tmp_directories=not read_only, enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(
      directory, options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": grain_ckpt.CheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})


def state_items(state: Any) -> dict[str, Any]:
  """The `state` item as saved: the train state's fields that are set, by name. A field that
  is None (the moving averages of a run without them) is left out rather than stored as an
  empty node, so checkpoints written before the field existed restore unchanged."""
  if not dataclasses.is_dataclass(state):
    return state
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
          if getattr(state, f.name) is not None}


def save(mgr: ocp.CheckpointManager, step: int, state: Any, data_iter: Any | None,
         config_json: str, metrics: dict[str, float] | None = None, force: bool = False) -> bool:
  """Saves one step (asynchronously); returns whether a save started."""
  items = dict(state=ocp.args.StandardSave(state_items(state)),
               meta=ocp.args.JsonSave(dict(step=int(step), metrics=metrics or {},
                                           config=json.loads(config_json))))
  if data_iter is not None:
    items["data"] = grain_ckpt.CheckpointSave(data_iter)
  return mgr.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)


def read_meta(mgr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The `meta` item of `step` ({} if it has none); errors.DamagedCheckpointError if unreadable."""
  path = pathlib.Path(mgr.directory) / str(step) / "meta" / "metadata"
  if not path.exists():
    return {}
  try:
    meta = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise errors.DamagedCheckpointError(mgr.directory, step, e) from None
  if not isinstance(meta, dict):
    raise errors.DamagedCheckpointError(mgr.directory, step,
                                      ValueError(f"{path} holds no JSON object"))
  return meta


def _accuracy(mgr: ocp.CheckpointManager, step: int) -> float | None:
  try:
    return read_meta(mgr, step).get("metrics", {}).get("accuracy")
  except errors.DamagedCheckpointError as e:
    logging.warning("%s; it is not a candidate for the best", e)
    return None


def candidate_steps(mgr: ocp.CheckpointManager, which: str | int) -> list[int]:
  """The steps that `latest`, `best` or a step number may use, in order of preference (the
  first one that restores is used), or an error naming the choices."""
  steps = sorted(mgr.all_steps(), reverse=True)
  if not steps:
    raise FileNotFoundError(f"no complete checkpoint in {mgr.directory}")
  if which in ("latest", "", None):
    return steps
  if which == "best":
    scored = [(a, s) for s in steps if (a := _accuracy(mgr, s)) is not None]
    if not scored:
      raise ValueError(f"no checkpoint in {mgr.directory} carries validation metrics; "
                       f"use latest or one of steps {sorted(steps)}")
    return [s for _, s in sorted(scored, reverse=True)]
  step = int(which)
  if step not in steps:
    raise ValueError(f"no checkpoint at step {step} in {mgr.directory}; kept steps are "
                     f"{sorted(steps)}")
  return [step]


def restore_first(mgr: ocp.CheckpointManager, which: str | int,
                  restore: Callable[[int], T]) -> tuple[int, T]:
  """`restore(step)` on the first of `candidate_steps(mgr, which)` that is not damaged.

  A damaged step is skipped with a warning naming it; one asked for by number is an error.
  """
  steps = candidate_steps(mgr, which)
  damaged = []
  for step in steps:
    try:
      return step, restore(step)
    except errors.DamagedCheckpointError as e:
      if len(steps) == 1 and str(which).isdigit():
        raise
      logging.warning("%s; trying the next %s step", e, "best" if which == "best" else "newest")
      damaged.append(e)
  raise errors.DamagedCheckpointError(mgr.directory, steps[-1], RuntimeError(
      f"every kept step ({', '.join(str(e.step) for e in damaged)}) is damaged"))


def set_aside(mgr: ocp.CheckpointManager, steps: list[int]) -> list[pathlib.Path]:
  """Moves damaged steps to WORKDIR/damaged_checkpoints/<step>[.<n>] (never deletes them);
  the caller reloads its managers (on every process) afterwards."""
  moved = []
  for step in steps:
    src = pathlib.Path(mgr.directory) / str(step)
    dst = pathlib.Path(mgr.directory).parent / DAMAGED_DIR / str(step)
    n = 1
    while dst.exists():
      dst = dst.with_name(f"{step}.{n}")
      n += 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))
    logging.warning("moved the damaged checkpoint %s to %s", src, dst)
    moved.append(dst)
  return moved


def _path(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _mismatches(saved_tree: Any, target: Any) -> list[str]:
  saved = {_path(p): tuple(getattr(x, "shape", ()))
           for p, x in jax.tree_util.tree_flatten_with_path(saved_tree)[0]}
  want = {_path(p): tuple(x.shape)
          for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
  out = []
  for k in sorted(set(saved) | set(want)):
    if k not in saved:
      out.append(f"{k} is missing from the checkpoint")
    elif k not in want:
      out.append(f"{k} is in the checkpoint but not in this model")
    elif saved[k] != want[k]:
      out.append(f"{k} has shape {saved[k]} in the checkpoint, {want[k]} in this model")
  return out


def check_compatible(mgr: ocp.CheckpointManager, step: int, target: Any) -> None:
  """Raises errors.IncompatibleCheckpointError naming the differing arrays if `step` holds another
  architecture, errors.DamagedCheckpointError if its metadata does not read."""
  try:
    saved = mgr.item_metadata(step)["state"]
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DamagedCheckpointError(mgr.directory, step, e) from None
  saved_tree = getattr(saved, "tree", saved)
  bad = _mismatches(saved_tree, state_items(target))
  if bad and all(b.startswith("ema/") for b in bad):
    saved_decay = read_meta(mgr, step).get("config", {}).get("optimizer", {}).get("ema_decay")
    has = "keeps" if any(b.endswith("not in this model") for b in bad) else "lacks"
    raise errors.IncompatibleCheckpointError(
        f"the checkpoint at step {step} in {mgr.directory} {has} moving averages of the "
        f"weights (its run's config.optimizer.ema_decay: {saved_decay}), this config does "
        f"not: pass --config.optimizer.ema_decay={saved_decay or 0.0}")
  if bad:
    shown = "\n  ".join(bad[:8]) + (f"\n  ... and {len(bad) - 8} more" if len(bad) > 8 else "")
    saved_model = read_meta(mgr, step).get("config", {}).get("model", {})
    raise errors.IncompatibleCheckpointError(
        f"the checkpoint at step {step} in {mgr.directory} was written by another "
        f"architecture (its config.model: {saved_model}):\n  {shown}")


def restore_state(mgr: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores the `state` item of `step` into the shapes and shardings of `target`."""
  verify_arrays(mgr, step)  # before Orbax reads anything of it (check_compatible does)
  check_compatible(mgr, step, target)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_items(target))
  try:
    restored = mgr.restore(step,
                           args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DamagedCheckpointError(mgr.directory, step, e) from None
  if dataclasses.is_dataclass(target):
    return target.replace(**restored["state"])
  return restored["state"]


def restore_data(mgr: ocp.CheckpointManager, step: int, data_iter: Any) -> bool:
  """Puts the iterator where it was at `step`; False if this process layout saved no state."""
  process_file = (pathlib.Path(mgr.directory) / str(step) / "data" /
                  f"process_{jax.process_index()}-of-{jax.process_count()}.json")
  if not process_file.exists():
    logging.info("checkpoint %d has no iterator state for %s; positioning the data by step",
                 step, process_file.name)
    return False
  try:
    mgr.restore(step, args=ocp.args.Composite(data=grain_ckpt.CheckpointRestore(data_iter)))
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DamagedCheckpointError(mgr.directory, step, e) from None
  return True


# ---- the model a checkpoint holds, from the run's own config

# What the checkpoint's config decides when eval or predict rebuild its model: what the
# parameters compute (the architecture, the crops it reads, the targets and loss it was trained
# on) and the shape of the saved state (the optimizer's slots, the moving averages). The rest of
# the caller's config applies: data folders and landmark variant, the split or list, batch
# sizes, `eval_flip`, `eval_ema`, the evaluation occluders' seed and `lowering` (how the
# convolutions run here: speed only, never the numbers or the parameters).
RUN_KEYS = ("model", "data.crops", "data.label_mode", "loss", "optimizer")


def saved_config(workdir: str, mgr: ocp.CheckpointManager, step: int) -> dict[str, Any] | None:
  """The config `step` was written with (its `meta` item, else WORKDIR/config.json), or None."""
  saved = read_meta(mgr, step).get("config")
  if saved:
    return saved
  path = pathlib.Path(workdir) / "config.json"
  return json.loads(path.read_text()) if path.exists() else None


def run_config(workdir: str, mgr: ocp.CheckpointManager, step: int) -> ml_collections.ConfigDict:
  """The config a checkpoint was trained with, laid over `fer_jax.defaults` so that a checkpoint
  of an older fer_jax still loads: keys the run did not know keep their defaults, keys this
  version no longer has are ignored."""
  saved = saved_config(workdir, mgr, step)
  if saved is None:
    raise FileNotFoundError(f"checkpoint {step} in {mgr.directory} carries no config and "
                            f"{pathlib.Path(workdir) / 'config.json'} does not exist: cannot "
                            "tell which model it holds")
  return config_from_saved(saved)


def config_from_saved(saved: Mapping) -> ml_collections.ConfigDict:
  """A saved config (nested dicts, as config.json holds) laid over `fer_jax.defaults`."""
  config = defaults.get_config()
  ignored = overrides.overlay(config, saved, "config")
  if ignored:
    logging.info("the saved config has keys this version ignores: %s", ignored)
  return config


def model_config(config: ml_collections.ConfigDict | None, run: ml_collections.ConfigDict,
                 whose: str) -> ml_collections.ConfigDict:
  """The config a saved model is used with: `run` (its own) without `config`, else `config`
  carrying `run`'s RUN_KEYS, the replaced values logged."""
  if config is None:
    return run
  cfg, changed = with_run_keys(config, run)
  if changed:
    shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more"
                                      if len(changed) > 6 else "")
    logging.info("the model is %s: its config replaces the given one's %s (given -> its): %s",
                 whose, "/".join(RUN_KEYS), shown)
  return cfg


def with_run_keys(config: ml_collections.ConfigDict, run: ml_collections.ConfigDict
                  ) -> tuple[ml_collections.ConfigDict, list[str]]:
  """A copy of `config` whose `RUN_KEYS` are `run`'s, and the keys where the two differed
  ("model.width: 0.25 -> 0.125", the given value first)."""
  out = copy.deepcopy(config)
  changed = []
  for key in RUN_KEYS:
    given = overrides.flat(overrides.get(config, key), key)
    theirs = overrides.flat(overrides.get(run, key), key)
    changed += [f"{k}: {given.get(k)!r} -> {v!r}" for k, v in theirs.items() if given.get(k) != v]
    *parents, name = key.split(".")
    section = overrides.get(out, ".".join(parents)) if parents else out
    section[name] = copy.deepcopy(overrides.get(run, key))
  return out, changed


# ---- what a resume may change

# Keys a resumed run may give other values than the run that wrote the checkpoint: how long it
# trains, its learning-rate schedule (to go on at a lower rate, say; not the optimizer state's
# shape: momentum, nesterov and ema_decay), how often it logs, evaluates and checkpoints, how it
# evaluates, where its data lives, how its data is fed (the same stream either way) and how the
# model lowers (speed only). Every other key (the model, the crops, the label mode, the loss,
# the seed, the batch size) decides what the run learns, and a resume that changes one is
# refused (`resume_changes`). A key and everything under it: "lowering" covers
# lowering.conv_impl.
RESUMABLE_KEYS = (
    "num_epochs", "num_train_steps", "log_every_steps", "eval_every_steps", "eval_every_epochs",
    "checkpoint_every_steps", "keep_checkpoints", "eval_batch_size", "eval_ema", "eval_flip",
    "eval_at_end", "plots", "optimizer.learning_rate", "optimizer.schedule",
    "optimizer.decay_epochs", "optimizer.decay_factor", "optimizer.warmup_epochs",
    "optimizer.grad_clip_norm", "optimizer.weight_decay", "data.manual_dir", "data.tfds_dir",
    "data.prefetch", "data.eval_split", "data.eval_list", "data.eval_occluder_seed",
    "data.source", "lowering", "predict", "multihost", "study", "occlusion")


def _resumable(key: str) -> bool:
  return any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)


def resume_changes(config: ml_collections.ConfigDict, saved: Mapping
                   ) -> list[tuple[str, Any, Any]]:
  """The keys outside RESUMABLE_KEYS where `config` differs from `saved` (the config a
  checkpoint was written with, laid over the defaults so that keys an older run did not know
  compare at their defaults), as (key, old, new)."""
  theirs = overrides.flat(config_from_saved(saved), "config")
  mine = overrides.flat(config, "config")
  out = []
  for key in sorted(set(theirs) | set(mine)):
    short = key.removeprefix("config.")
    if _resumable(short) or key not in mine or key not in theirs:
      continue
    old, new = theirs[key], mine[key]
    if old != new and not (isinstance(old, (int, float)) and isinstance(new, (int, float))
                           and float(old) == float(new)):
      out.append((short, old, new))
  return out


def _flag_value(value: Any) -> str:
  """A value as a --config.KEY=VALUE flag takes it (strings bare, tuples as literals)."""
  return value if isinstance(value, str) else repr(value)


def newest_saved_config(workdir: str) -> tuple[int, Mapping] | None:
  """(step, config) of the newest checkpoint of `workdir` whose `meta` item holds a config
  (else WORKDIR/config.json, if the folder has checkpoints), read without opening a
  CheckpointManager (cheap, for checks before any work); None if there is none."""
  directory = pathlib.Path(workdir) / "checkpoints"
  steps = sorted((int(p.name) for p in directory.glob("*") if p.name.isdigit() and p.is_dir()),
                 reverse=True) if directory.is_dir() else []
  for step in steps:
    try:
      meta = json.loads((directory / str(step) / "meta" / "metadata").read_text())
    except (OSError, ValueError):
      continue
    if isinstance(meta, dict) and isinstance(meta.get("config"), dict):
      return step, meta["config"]
  try:
    saved = json.loads((pathlib.Path(workdir) / "config.json").read_text()) if steps else None
  except (OSError, ValueError):
    saved = None
  return (steps[0], saved) if isinstance(saved, dict) else None


def check_resume(config: ml_collections.ConfigDict, workdir: str,
                 allow: tuple[str, ...] = ()) -> None:
  """Refuses (ValueError, exit 2) a run on `workdir` whose config changes what its
  checkpoints learnt, naming every changed key with its old and new value. `allow`: keys a
  caller changes on purpose (training in stages at growing crop sizes, say)."""
  found = newest_saved_config(workdir)
  if found is None:
    return
  step, saved = found
  changes = [c for c in resume_changes(config, saved) if c[0] not in allow]
  if changes:
    shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changes)
    flags = " ".join(f"--config.{k}={_flag_value(old)}" for k, old, _ in changes)
    raise ValueError(
        f"--workdir={workdir} holds a run (checkpoint step {step}) trained with other values "
        f"of {len(changes)} key(s) that decide what it learns: {shown} (old -> new). Resume "
        f"with the old values ({flags}), or start a new --workdir")


def restore_variables(config: ml_collections.ConfigDict, mgr: ocp.CheckpointManager, step: int,
                      mesh) -> dict[str, Any]:
  """The model variables of checkpoint `step` (the moving averages when `config.eval_ema` and
  the run keeps them), restored replicated over `mesh` into a state shaped from `config` (a
  checkpoint of another architecture is refused, naming the mismatch)."""
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=parallel.replicated(mesh)),
                        state_lib.abstract_train_state(config))
  return restore_state(mgr, step, target).variables(config.eval_ema)


# ---- released models' folders (fer_jax/weights/NAME, written by release.write)


def is_release(path) -> bool:
  """Whether `path` is a released model's folder (rather than a training run's)."""
  path = pathlib.Path(path)
  return (path / "release.json").is_file() and (path / "variables").is_dir()


def load_release(path: pathlib.Path, config: ml_collections.ConfigDict | None = None, mesh=None
                 ) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """(config, float32 variables replicated over `mesh`, step) of the released model in `path`,
  with the semantics of `load_checkpoint` (which calls this for such a folder)."""
  path = pathlib.Path(path)
  own = config_from_saved(json.loads((path / "config.json").read_text()))
  cfg = model_config(config, own, f"the released {path.name}")
  with ocp.StandardCheckpointer() as ckptr:
    stored = ckptr.restore((path / "variables").resolve())
  mesh = mesh if mesh is not None else parallel.make_mesh()
  variables = jax.device_put(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), stored),
                             parallel.replicated(mesh))
  step = int(json.loads((path / "release.json").read_text()).get("step", 0))
  return cfg, variables, step


def load_checkpoint(workdir: str, which: str | int = "latest",
                    config: ml_collections.ConfigDict | None = None, mesh=None
                    ) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """(config, the model variables, the step) of checkpoint `which` of `workdir`.

  Without `config` (predict), the config is the run's own, whole. With `config` (eval), it is
  `config` with the run's `RUN_KEYS` (model, crops, label mode, loss, optimizer): the model is
  always the one the checkpoint holds, while the caller's data, split, batch sizes, eval_flip,
  eval_ema, occluder seed and lowering apply; a given RUN_KEYS value that differs is logged and
  gives way. A checkpoint that carries no config (and no WORKDIR/config.json) is read with
  `config` as it is, or refused without one.
  """
  if is_release(workdir):  # a released model's folder (fer_jax/weights/NAME)
    return load_release(pathlib.Path(workdir), config=config, mesh=mesh)
  mgr = manager(workdir, read_only=True)
  mesh = mesh if mesh is not None else parallel.make_mesh()

  def restore(step):
    if config is not None and saved_config(workdir, mgr, step) is None:
      logging.warning("checkpoint %d in %s carries no config: its model is taken to be the "
                      "given config's", step, mgr.directory)
      cfg = config
    else:
      cfg = model_config(config, run_config(workdir, mgr, step), "the checkpoint's")
    return cfg, restore_variables(cfg, mgr, step, mesh)

  try:
    step, (cfg, variables) = restore_first(mgr, which, restore)
  finally:
    mgr.close()  # no Orbax machinery left running at interpreter shutdown
  return cfg, variables, step
