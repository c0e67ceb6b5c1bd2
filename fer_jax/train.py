"""Training: the per-device step, its data-parallel mapping, and the loop.

The step is written for one device, as under `pmap`: it cuts the crops (when they are cut on
the device), runs the model, takes the gradient of CE + lambda * constraint, averages gradients,
BatchNorm statistics and metrics with `lax.pmean` over the `data` axis, and applies SGD. It is
mapped over every device of every process with `jax.shard_map` under `jax.jit`, with the state
donated.

The loop resumes from the latest checkpoint in WORKDIR (data position included), evaluates and
checkpoints periodically, keeps the best on validation, logs to the terminal, TensorBoard and
WORKDIR/metrics.jsonl, stops on a non-finite loss without touching the last good checkpoint,
and on SIGTERM saves and exits cleanly.
"""

from __future__ import annotations

import functools
import json
import pathlib
import signal
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax

from fer_jax import checkpoint as ckpt_lib
from fer_jax import evaluate as eval_lib
from fer_jax import jsonl
from fer_jax import losses
from fer_jax import parallel
from fer_jax import plots
from fer_jax import state as state_lib
from fer_jax.data import crops as crops_lib
from fer_jax.data import pipeline


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or Inf; the message gives the step and what overflowed."""


# What a step checks for NaN or Inf, in the order the error message names them.
FINITE_CHECKS = ("loss", "gradient norm", "parameters", "BatchNorm statistics")


def train_step(state: state_lib.TrainState, batch: dict[str, jax.Array], *, model, tx, lr_fn,
               crop_cfg: crops_lib.CropConfig, crops_on: str, crop_seed: int, label_mode: str,
               hi: int, lo: int, margin: float, constraint_weight: float,
               axis_name: str = parallel.DATA_AXIS):
  """One SGD step on this device's share of the global batch (pmap semantics).

  A step whose loss is not finite leaves the state as it was (and says so in
  `metrics['finite']`), so that the state the loop holds is always the last good one.
  """
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
  x = crops_lib.model_inputs(batch, crop_cfg, crop_seed, True, crops_on)
  targets = batch["target"]
  if label_mode == "probability":  # Microsoft's: a one-hot sample of the vote distribution
    label_keys = crops_lib.example_keys(step_key, batch["index"])
    drawn = jax.vmap(jax.random.categorical)(label_keys, jnp.log(targets + 1e-30))
    targets = jax.nn.one_hot(drawn, targets.shape[-1])
  kind = "multi_target" if label_mode == "multi_target" else "cross_entropy"

  def loss_fn(params):
    out, mutated = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                               train=True, mutable=["batch_stats"])
    loss, parts = losses.total_loss(out["logits"], out["mu"], targets, hi=hi, lo=lo,
                                    margin=margin, constraint_weight=constraint_weight,
                                    kind=kind)
    return loss, (out, parts, mutated["batch_stats"])

  (loss, (out, parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  grads = lax.pmean(grads, axis_name)
  batch_stats = lax.pmean(batch_stats, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  mu = out["mu"]
  metrics = dict(loss=loss, ce=parts["ce"], constraint=parts["constraint"],
                 accuracy=jnp.mean(jnp.argmax(out["logits"], -1) == jnp.argmax(targets, -1)),
                 **{f"mu/{name}": jnp.mean(mu[:, i]) for i, name in enumerate(crop_cfg.branches)})
  metrics = lax.pmean(metrics, axis_name)
  metrics["learning_rate"] = lr_fn(state.step)
  metrics["grad_norm"] = optax.tree.norm(grads)
  checks = dict(zip(FINITE_CHECKS, (
      jnp.isfinite(metrics["loss"]), jnp.isfinite(metrics["grad_norm"]),
      jnp.isfinite(optax.tree.norm(params)), jnp.isfinite(optax.tree.norm(batch_stats)))))
  finite = functools.reduce(jnp.logical_and, checks.values())
  metrics["finite"] = finite
  metrics["finite_parts"] = checks
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
  return new_state, metrics


def make_train_step(config: ml_collections.ConfigDict, mesh, tx, lr_fn):
  """The jitted, shard_mapped train step: (state, global batch) -> (state, metrics)."""
  hi, lo = state_lib.constraint_indices(config)
  fn = functools.partial(
      train_step, model=state_lib.build_model(config, data_axis_name=parallel.DATA_AXIS),
      tx=tx, lr_fn=lr_fn, crop_cfg=state_lib.crop_config(config),
      crops_on=config.data.crops_on, crop_seed=config.seed, label_mode=config.data.label_mode,
      hi=hi, lo=lo, margin=config.loss.margin, constraint_weight=config.loss.constraint_weight)
  mapped = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                         out_specs=(P(), P()), check_vma=False)
  return jax.jit(mapped, donate_argnums=(0,))


def init_state(config: ml_collections.ConfigDict, mesh, tx) -> state_lib.TrainState:
  """A fresh state from `config.seed`, replicated over the mesh."""
  model = state_lib.build_model(config)
  create = jax.jit(lambda k: state_lib.create_train_state(config, model, tx, k),
                   out_shardings=parallel.replicated(mesh))
  return create(jax.random.key(config.seed))


STEP_INPUTS = ("image", "landmarks", "crops", "index", "target")


class MetricWriter:
  """metrics.jsonl and TensorBoard (tensorboardX), written by process 0 only."""

  def __init__(self, workdir: pathlib.Path, resume_step: int):
    self.enabled = parallel.is_main()
    self.path = workdir / "metrics.jsonl"
    self._tb = None
    if not self.enabled:
      return
    if self.path.exists():  # drop lines of steps that the resumed run will redo
      keep = [json.dumps(r) for r in jsonl.read(self.path)
              if r.get("step", 0) <= resume_step]
      self.path.write_text("".join(l + "\n" for l in keep))
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(workdir / "tensorboard"))
    except ImportError:
      logging.warning("tensorboardX is not installed: no TensorBoard logs")

  def write(self, step: int, kind: str, metrics: dict[str, Any]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float, np.floating, np.integer)) and k != "finite"}
    with open(self.path, "a") as f:
      f.write(json.dumps(dict(step=int(step), kind=kind, time=time.time(), **scalars)) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{kind}/{k}", v, step)
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


class Preemption:
  """SIGTERM -> save a checkpoint at the next step boundary and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: checkpointing at the next step, then exiting")
    self.requested = True

  def should_stop(self) -> bool:
    return parallel.any_process(self.requested)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def check_resume_batch(config: ml_collections.ConfigDict, saved: dict[str, Any], step: int,
                       directory: str) -> None:
  """The saved data position counts batches: resuming with another batch size would repeat
  or skip examples, so it is refused with what to do instead."""
  was = saved.get("config", {}).get("batch_size")
  if was is not None and int(was) != int(config.batch_size):
    raise ValueError(
        f"the checkpoint at step {step} in {directory} was trained with "
        f"config.batch_size={was}, this run asks {config.batch_size}: its data position counts "
        f"batches of {was}, so resuming would repeat or skip examples. Resume with "
        f"--config.batch_size={was}, or start a new --workdir")


def resume(config: ml_collections.ConfigDict, mgr, target: state_lib.TrainState, data_iter,
           make_ds) -> tuple[int, tuple[state_lib.TrainState, Any]]:
  """(step, (state, data iterator)) of the newest checkpoint that restores.

  Damaged newer steps are named in a warning and moved aside (`checkpoint.set_aside`), so the
  run writes those steps again; a checkpoint of another architecture or batch size is an error.
  """
  def restore(step):
    check_resume_batch(config, ckpt_lib.read_meta(mgr, step), step, mgr.directory)
    state = ckpt_lib.restore_state(mgr, step, target)
    it = data_iter if ckpt_lib.restore_data(mgr, step, data_iter) else iter(make_ds(step))
    return state, it

  step, restored = ckpt_lib.restore_first(mgr, "latest", restore)
  damaged = [s for s in mgr.all_steps() if s > step]
  if damaged:
    if parallel.is_main():
      ckpt_lib.set_aside(mgr, damaged)
    parallel.sync("damaged checkpoints set aside")
    mgr.reload()
  return step, restored


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; returns the final evaluation metrics."""
  parallel.initialize(config.multihost)
  workdir_path = pathlib.Path(workdir).resolve()
  workdir_path.mkdir(parents=True, exist_ok=True)
  mesh = parallel.make_mesh()
  pipeline.check_batch(config.batch_size, jax.process_count(), jax.device_count())
  pipeline.check_batch(config.eval_batch_size, jax.process_count(), jax.device_count())
  crop_cfg = state_lib.crop_config(config)
  state_lib.constraint_indices(config)

  tfds_dir = pipeline.resolve_tfds_dir(config.data.tfds_dir, str(workdir_path))
  if parallel.is_main():
    pipeline.open_sources(tfds_dir, config.data.landmarks, config.data.manual_dir)
  parallel.sync("dataset prepared")
  sources = pipeline.open_sources(tfds_dir, config.data.landmarks, prepare_if_missing=False)
  train_split = pipeline.load_split(sources, config.data.train_split, config.data.label_mode,
                                    for_eval=False)
  eval_split = eval_lib.load_eval_split(config, sources) if (
      config.data.eval_split or config.data.eval_list) else None
  steps_per_epoch = pipeline.steps_per_epoch(train_split, config.batch_size)
  num_steps = state_lib.total_steps(config, steps_per_epoch)
  eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
  ckpt_every = config.checkpoint_every_steps if config.checkpoint_every_steps > 0 else eval_every

  tx, lr_fn = state_lib.make_optimizer(config, steps_per_epoch)
  state = init_state(config, mesh, tx)
  logging.info("model: %s parameters (backbone %s, shared by %d branches); %d devices, "
               "%d processes; %d training examples, %d steps per epoch, %d steps",
               f"{state_lib.count_params(state.params):,}",
               f"{state_lib.count_params(state.params['backbone']):,}", len(crop_cfg.branches),
               jax.device_count(), jax.process_count(), len(train_split), steps_per_epoch,
               num_steps)

  mgr = ckpt_lib.manager(str(workdir_path), keep=config.keep_checkpoints)
  host_crops = crop_cfg if config.data.crops_on == "host" else None
  make_ds = lambda first: pipeline.train_dataset(
      train_split, global_batch=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      host_crops=host_crops, worker_count=config.data.worker_count,
      prefetch=config.data.prefetch, start_batch=first)
  data_iter = iter(make_ds(0))
  start = 0
  if mgr.latest_step() is not None:
    start, (state, data_iter) = resume(config, mgr, state, data_iter, make_ds)
    logging.info("resumed from the checkpoint at step %d in %s", start, mgr.directory)

  config_json = config.to_json_best_effort()
  if parallel.is_main():
    (workdir_path / "config.json").write_text(config_json)
  writer = MetricWriter(workdir_path, start)
  p_step = make_train_step(config, mesh, tx, lr_fn)
  eval_step = eval_lib.make_eval_step(config, mesh) if eval_split is not None else None
  branch_names = list(crop_cfg.branches)

  def run_eval(step: int) -> dict[str, Any] | None:
    if eval_split is None:
      return None
    metrics, mu = eval_lib.evaluate_split(config, state.variables(), eval_split, mesh, eval_step)
    metrics["checkpoint_step"] = step
    writer.write(step, "eval", dict(accuracy=metrics["accuracy"],
                                    **{f"mu/{k}": v for k, v in
                                       metrics["mean_branch_weights"].items()}))
    return metrics, mu

  def save(step: int, metrics=None, force=False):
    ckpt_lib.save(mgr, step, state, data_iter, config_json,
                  None if metrics is None else dict(accuracy=metrics["accuracy"]), force=force)

  def check_finite(done_step: int, done: dict) -> None:
    if not bool(done["finite"]):
      bad = [f"the {k}" for k in FINITE_CHECKS if not bool(done["finite_parts"][k])]
      bad = ", ".join(bad[:-1]) + (" and " if len(bad) > 1 else "") + bad[-1]
      raise NonFiniteLossError(
          f"the training step overflowed at step {done_step}: {bad} "
          f"became non-finite (loss {float(done['loss'])}, gradient norm "
          f"{float(done['grad_norm'])}, learning rate {float(done['learning_rate']):.3g}); "
          f"stopped without saving. The last good checkpoint in {mgr.directory} is step "
          f"{mgr.latest_step()}")

  step = start
  last_eval = None
  pending, window = [], []
  t_log, step_log = time.time(), start
  try:
    with Preemption() as preemption:
      while step < num_steps:
        batch = next(data_iter)
        inputs = parallel.global_batch({k: v for k, v in batch.items() if k in STEP_INPUTS}, mesh)
        state, metrics = p_step(state, inputs)
        step += 1
        pending.append((step, metrics))
        # Check the previous step while this one runs; check everything before a save.
        drain = (step % eval_every == 0 or step % ckpt_every == 0 or step == num_steps
                 or step % config.log_every_steps == 0)
        while len(pending) > (0 if drain else 1):
          done_step, done = pending.pop(0)
          check_finite(done_step, done)
          window.append(done)
        if step % config.log_every_steps == 0 or step == num_steps:
          host = jax.device_get(window)
          if host:
            mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]
                    if not k.startswith("finite")}
            rate = (step - step_log) / max(time.time() - t_log, 1e-9)
            writer.write(step, "train", dict(mean, steps_per_second=rate))
            logging.info(
                "step %d/%d (epoch %.2f): loss %.4f ce %.4f constraint %.4f acc %.3f "
                "lr %.3g | mu %s | %.2f steps/s, ETA %s", step, num_steps,
                step / steps_per_epoch, mean["loss"], mean["ce"], mean["constraint"],
                mean["accuracy"], mean["learning_rate"],
                " ".join(f"{n}={mean[f'mu/{n}']:.3f}" for n in branch_names), rate,
                _format_eta((num_steps - step) / max(rate, 1e-9)))
          window, t_log, step_log = [], time.time(), step
        evaluated = None
        if step % eval_every == 0 and step < num_steps:
          evaluated = run_eval(step)
          last_eval = evaluated or last_eval
        if (step % ckpt_every == 0 or evaluated) and step < num_steps:
          save(step, evaluated[0] if evaluated else None)
        if preemption.should_stop():
          for done_step, done in pending:
            check_finite(done_step, done)
          logging.warning("preempted at step %d: saving and exiting", step)
          if mgr.latest_step() != step:  # unless this very step was just saved
            save(step, force=True)
          mgr.wait_until_finished()
          writer.close()
          return dict(preempted=True, step=step)
      final = run_eval(step) if config.eval_at_end else None
      if mgr.latest_step() != step:
        save(step, final[0] if final else None, force=True)
      mgr.wait_until_finished()
  except NonFiniteLossError:
    mgr.wait_until_finished()
    writer.close()
    raise
  except BaseException:
    # Anything else (bad data, KeyboardInterrupt, ...): keep what was learnt, then re-raise.
    if step > (mgr.latest_step() or 0):
      logging.error("training stopped by an error at step %d: saving a checkpoint first", step)
      try:
        save(step, force=True)
        mgr.wait_until_finished()
      except Exception:  # pylint: disable=broad-except
        logging.exception("could not save the checkpoint at step %d", step)
    writer.close()
    raise

  writer.close()
  result: dict[str, Any] = dict(step=step)
  if final is not None:
    metrics, mu = final
    result.update(metrics)
    if parallel.is_main():
      path = eval_lib.write_results(str(workdir_path), eval_split.name, metrics, mu,
                                    branch_names, config.plots)
      logging.info("final evaluation on %s: accuracy %.4f (%d examples); wrote %s",
                   eval_split.name, metrics["accuracy"], metrics["num_examples"], path)
  if parallel.is_main() and config.plots and writer.path.exists():
    plots.training_curves(writer.path, workdir_path / "training_curves.png")
  return result
