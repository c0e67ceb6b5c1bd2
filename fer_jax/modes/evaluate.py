"""`--mode=eval`: a checkpoint (or a live train state) over a split or a list file.

`evaluate_split` runs the jitted, data-parallel forward pass over every example exactly once and
computes accuracy, per-class accuracy, the confusion matrix and the mean branch weights.
`evaluate` (`--mode=eval`) restores a checkpoint with the model its run's config describes
(`checkpoint.load_checkpoint`) and writes `WORKDIR/eval/<name>.json`, a confusion-matrix PNG and
a branch-weight PNG.
"""

from __future__ import annotations

import functools
import pathlib
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from fer_jax import calibration
from fer_jax import checkpoint as ckpt_lib
from fer_jax.data import labels as labels_lib
from fer_jax.data import pipeline
from fer_jax import files
from fer_jax import inference
from fer_jax.modes import Args
from fer_jax import parallel
from fer_jax import plots
from fer_jax import state as state_lib


def make_eval_step(config: ml_collections.ConfigDict, mesh):
  model = state_lib.build_model(config, data_axis_name=parallel.DATA_AXIS)
  fn = functools.partial(inference.eval_step, model=model, crop_cfg=state_lib.crop_config(config),
                         crops_on=config.data.crops_on,
                         occluder_seed=config.data.eval_occluder_seed, flip=config.eval_flip,
                         temperature=float(config.model.temperature))
  return parallel.data_parallel(fn, mesh, (parallel.REPLICATED, parallel.SHARDED),
                                parallel.SHARDED)


def summarize(probs: np.ndarray, mu: np.ndarray, labels: np.ndarray, branch_names: list[str],
              constraint: tuple[int, int, float] | None = None) -> dict[str, Any]:
  """Metrics of one evaluation from per-example outputs (padding already removed).

  `hinge_active` is the fraction of examples whose constraint (hi, lo, margin) is active,
  mu_hi - mu_lo < margin, or None for a run without a constraint term.
  """
  pred = probs.argmax(-1)
  cm = np.zeros((labels_lib.NUM_CLASSES,) * 2, np.int64)
  np.add.at(cm, (labels, pred), 1)
  per_class = {name: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None)
               for i, name in enumerate(labels_lib.CLASS_NAMES)}
  return dict(
      accuracy=float((pred == labels).mean()) if len(labels) else float("nan"),
      per_class_accuracy=per_class,
      confusion_matrix=cm.tolist(),
      num_examples=int(len(labels)),
      mean_branch_weights={n: float(mu[:, i].mean()) for i, n in enumerate(branch_names)},
      hinge_active=(None if constraint is None or not len(labels) else
                    float(np.mean(mu[:, constraint[0]] - mu[:, constraint[1]] < constraint[2]))),
  )


def evaluate_split(config: ml_collections.ConfigDict, variables, split: pipeline.Split, mesh,
                   step_fn=None, host_fn=None) -> tuple[dict[str, Any], np.ndarray]:
  """Runs over every example of `split` once; returns (metrics, per-example mu [N, nb]).

  `host_fn(batch) -> batch`, when given, changes each process's batch of numpy arrays before it
  goes to the devices (the occluded evaluation's refitted landmarks)."""
  step_fn = step_fn or make_eval_step(config, mesh)
  host_crops = state_lib.crop_config(config) if config.data.crops_on == "host" else None
  ds = pipeline.eval_dataset(split, global_batch=config.eval_batch_size,
                             process_index=jax.process_index(),
                             process_count=jax.process_count(), host_crops=host_crops,
                             seed=config.data.eval_occluder_seed,
                             worker_count=config.data.worker_count, prefetch=config.data.prefetch)
  probs, mus, labs, masks, logits = [], [], [], [], []
  start = time.time()
  for batch in ds:
    meta = {k: batch[k] for k in ("label", "mask")}
    if host_fn is not None:
      batch = host_fn(batch)
    inputs = {k: v for k, v in batch.items()
              if k in ("image", "landmarks", "crops", "index")}
    out = parallel.to_host(step_fn(variables, parallel.global_batch(inputs, mesh)))
    meta = parallel.to_host(parallel.global_batch(meta, mesh))
    probs.append(out["probs"])
    logits.append(out["logits"])
    mus.append(out["mu"])
    labs.append(meta["label"])
    masks.append(meta["mask"])
  keep = np.concatenate(masks) > 0
  probs, mu = np.concatenate(probs)[keep], np.concatenate(mus)[keep]
  labels = np.concatenate(labs)[keep]
  # A run evaluated on some branches alone (model.inference_branches) has no hinge to report.
  hi_lo = None if config.model.inference_branches else state_lib.constraint_indices(config)
  metrics = summarize(probs, mu, labels, list(config.data.crops.branches),
                      None if hi_lo is None else (*hi_lo, config.loss.margin))
  metrics["calibration"] = calibration.report(np.concatenate(logits)[keep], labels,
                                              float(config.model.temperature))
  cal = metrics["calibration"]
  logging.info("evaluated %d examples of %s in %.1fs: accuracy %.4f, ECE %.4f and NLL %.4f at "
               "the model's temperature %.3g (%.4f and %.4f at 1)", len(labels), split.name,
               time.time() - start, metrics["accuracy"], cal["ece"], cal["nll"],
               cal["temperature"], cal["ece_at_1"], cal["nll_at_1"])
  return metrics, mu


def write_results(workdir: str, name: str, metrics: dict[str, Any], mu: np.ndarray,
                  branch_names: list[str], make_plots: bool = True) -> pathlib.Path:
  """WORKDIR/eval/<name>.json, <name>_confusion.png, <name>_branch_weights.png and
  <name>_reliability.png."""
  out_dir = pathlib.Path(workdir) / "eval"
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f"{name}.json"
  files.write_json(path, metrics)
  if make_plots:
    title = f"{name}, step {metrics.get('checkpoint_step')}: accuracy {metrics['accuracy']:.4f}"
    plots.confusion_matrix(np.array(metrics["confusion_matrix"]), labels_lib.CLASS_NAMES,
                           out_dir / f"{name}_confusion.png", title)
    plots.branch_weights(mu, branch_names, out_dir / f"{name}_branch_weights.png", title)
    if "calibration" in metrics:
      plots.reliability(metrics["calibration"], out_dir / f"{name}_reliability.png")
  return path


def load_eval_split(config: ml_collections.ConfigDict, sources) -> pipeline.Split:
  if config.data.eval_list:
    return pipeline.split_from_list(sources, config.data.eval_list)
  return pipeline.load_split(sources, config.data.eval_split, config.data.label_mode,
                             for_eval=True, **holdout(config))


def holdout(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`pipeline.load_split`'s hold-out arguments from `config.data`."""
  return dict(holdout=config.data.holdout, holdout_seed=config.data.holdout_seed,
              train_split=config.data.train_split)


HOLDOUT_KEYS = ("holdout", "holdout_seed", "train_split")


def run_holdout(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` with the run's own `data.holdout`, `holdout_seed` and `train_split` (from its
  newest checkpoint's config), so that the confirmation slice evaluated is the one the run
  held out, whatever the command's config says."""
  found = ckpt_lib.newest_saved_config(workdir)
  saved = (found[1] if found else {}).get("data", {})
  config = config.copy_and_resolve_references()
  for key in HOLDOUT_KEYS:
    if key in saved and saved[key] != config.data[key]:
      logging.info("confirmation split: data.%s=%r, the run's own (the command said %r)", key,
                   saved[key], config.data[key])
      config.data[key] = saved[key]
  return config


def load_confirmation(config: ml_collections.ConfigDict, sources) -> pipeline.Split | None:
  """The confirmation split (`data.holdout` > 0), or None."""
  if config.data.holdout <= 0:
    return None
  return pipeline.load_split(sources, pipeline.CONFIRMATION, "majority", for_eval=True,
                             **holdout(config))


def restore_for_eval(config: ml_collections.ConfigDict, workdir: str, which: str,
                     prepare_if_missing: bool = True):
  """What every evaluation of a checkpoint (--mode=eval, --mode=occlusion) starts from:
  (the run's config, its variables, their step, the split, the mesh). The split is
  `data.eval_split` or `data.eval_list`, from the dataset of `data.tfds_dir` (WORKDIR/tfds),
  prepared from `data.manual_dir` if it is not yet (unless not `prepare_if_missing`: occlusion
  evaluates runs whose data exists); the model is the checkpoint's own
  (`checkpoint.RUN_KEYS` from the run's config, `checkpoint.load_checkpoint`)."""
  mesh = parallel.make_mesh()
  if config.data.eval_split == pipeline.CONFIRMATION and not config.data.eval_list:
    config = run_holdout(config, workdir)
  sources = pipeline.open_sources(pipeline.resolve_tfds_dir(config.data.tfds_dir, workdir),
                                  config.data.landmarks, config.data.manual_dir,
                                  prepare_if_missing=prepare_if_missing)
  split = load_eval_split(config, sources)
  config, variables, step = ckpt_lib.load_checkpoint(workdir, which, config=config, mesh=mesh)
  return config, variables, step, split, mesh


def evaluate(config: ml_collections.ConfigDict, workdir: str, which: str = "latest",
             out_dir: str | None = None) -> dict[str, Any]:
  """`--mode=eval`: restores a checkpoint and evaluates `data.eval_split` or `data.eval_list`.

  The model is the checkpoint's: `checkpoint.RUN_KEYS` (config.model, data.crops,
  data.label_mode, loss, optimizer) come from the run's own config, so any --config evaluates
  any run. Everything else comes from `config`: the data (manual_dir, tfds_dir, landmarks,
  eval_split, eval_list, crops_on, workers), eval_batch_size, eval_flip, eval_ema,
  data.eval_occluder_seed, lowering and plots. The results go to OUT_DIR/eval (WORKDIR/eval
  without `out_dir`); the dataset is prepared from `data.manual_dir` if it is not yet.
  """
  config, variables, step, split, mesh = restore_for_eval(config, workdir, which)
  metrics, mu = evaluate_split(config, variables, split, mesh)
  metrics["checkpoint_step"] = int(step)
  metrics["split"] = split.name
  if parallel.is_main():
    path = write_results(out_dir or workdir, split.name, metrics, mu,
                         list(config.data.crops.branches),
                         config.plots)
    logging.info("wrote %s (accuracy %.4f over %d examples, checkpoint step %d)", path,
                 metrics["accuracy"], metrics["num_examples"], step)
  return metrics


def main(args: Args) -> dict[str, Any]:
  """`--mode=eval`: results under --output (a released model's default) or WORKDIR."""
  return evaluate(args.config, args.workdir, args.checkpoint, out_dir=args.output)
