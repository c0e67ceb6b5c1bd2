"""Orbax checkpoints in WORKDIR/checkpoints: save, resume, best-on-validation.

Each checkpoint step holds three items:
- `state`: the train state (global arrays, written collectively by every process);
- `data`: the grain iterator's position, one file per process;
- `meta`: JSON with the step, the validation metrics of that step (if any) and the config.

Kept: the last `keep` checkpoints and the best on validation accuracy. Orbax writes each step
into a temporary folder and renames it when complete, so a run killed mid-save leaves no
partial checkpoint behind: `latest_step` only ever sees whole ones.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from absl import logging
import grain
import grain.checkpoint as grain_ckpt
import jax
import numpy as np
import orbax.checkpoint as ocp

policies = ocp.checkpoint_managers


def manager(workdir: str, keep: int = 3, read_only: bool = False,
            async_save: bool = True) -> ocp.CheckpointManager:
  """The CheckpointManager of a run (created if absent unless `read_only`)."""
  directory = pathlib.Path(workdir).expanduser().resolve() / "checkpoints"
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


def save(mgr: ocp.CheckpointManager, step: int, state: Any, data_iter: Any | None,
         config_json: str, metrics: dict[str, float] | None = None, force: bool = False) -> bool:
  """Saves one step (asynchronously); returns whether a save started."""
  items = dict(state=ocp.args.StandardSave(state),
               meta=ocp.args.JsonSave(dict(step=int(step), metrics=metrics or {},
                                           config=json.loads(config_json))))
  if data_iter is not None:
    items["data"] = grain_ckpt.CheckpointSave(data_iter)
  return mgr.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)


def read_meta(mgr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  path = pathlib.Path(mgr.directory) / str(step) / "meta" / "metadata"
  if not path.exists():
    return {}
  return json.loads(path.read_text())


def best_step(mgr: ocp.CheckpointManager) -> int | None:
  """The kept step with the highest validation accuracy, or None if none was evaluated."""
  scored = [(read_meta(mgr, s).get("metrics", {}).get("accuracy"), s) for s in mgr.all_steps()]
  scored = [(a, s) for a, s in scored if a is not None]
  return max(scored)[1] if scored else None


def resolve_step(mgr: ocp.CheckpointManager, which: str | int) -> int:
  """`latest`, `best` or a step number -> a step that exists, or an error naming the choices."""
  steps = mgr.all_steps()
  if not steps:
    raise FileNotFoundError(f"no complete checkpoint in {mgr.directory}")
  if which in ("latest", "", None):
    return max(steps)
  if which == "best":
    step = best_step(mgr)
    if step is None:
      raise ValueError(f"no checkpoint in {mgr.directory} carries validation metrics; "
                       f"use latest or one of steps {sorted(steps)}")
    return step
  step = int(which)
  if step not in steps:
    raise ValueError(f"no checkpoint at step {step} in {mgr.directory}; kept steps are "
                     f"{sorted(steps)}")
  return step


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
  """Raises a ValueError naming the differing arrays if `step` holds another architecture."""
  saved = mgr.item_metadata(step)["state"]
  saved_tree = getattr(saved, "tree", saved)
  bad = _mismatches(saved_tree, target)
  if bad:
    shown = "\n  ".join(bad[:8]) + (f"\n  ... and {len(bad) - 8} more" if len(bad) > 8 else "")
    saved_model = read_meta(mgr, step).get("config", {}).get("model", {})
    raise ValueError(
        f"the checkpoint at step {step} in {mgr.directory} was written by another "
        f"architecture (its config.model: {saved_model}):\n  {shown}")


def restore_state(mgr: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores the `state` item of `step` into the shapes and shardings of `target`."""
  check_compatible(mgr, step, target)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  return restored["state"]


def restore_data(mgr: ocp.CheckpointManager, step: int, data_iter: Any) -> bool:
  """Puts the iterator where it was at `step`; False if this process layout saved no state."""
  process_file = (pathlib.Path(mgr.directory) / str(step) / "data" /
                  f"process_{jax.process_index()}-of-{jax.process_count()}.json")
  if not process_file.exists():
    logging.info("checkpoint %d has no iterator state for %s; positioning the data by step",
                 step, process_file.name)
    return False
  mgr.restore(step, args=ocp.args.Composite(data=grain_ckpt.CheckpointRestore(data_iter)))
  return True
