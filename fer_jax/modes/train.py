"""`--mode=train`: the per-device step, its data-parallel mapping, and the loop.

The step is written for one device, as under `pmap`: it cuts the crops (when they are cut on
the device), runs the model, takes the gradient of CE + lambda * constraint, averages gradients,
BatchNorm statistics and metrics with `lax.pmean` over the `data` axis, and applies SGD. It is
mapped over every device of every process with `jax.shard_map` under `jax.jit`, with the state
donated. Its batch comes from the host (`data.source="grain"`), or the step gathers it from
device-resident arrays (`data.source="memory"`, `fer_jax/data/memory.py`).

The loop resumes from the latest checkpoint in WORKDIR that restores (data position included),
evaluates and checkpoints periodically, keeps the best on validation, logs to the terminal,
TensorBoard and WORKDIR/metrics.jsonl, stops on a non-finite step without touching the last
good checkpoint, and on SIGTERM saves and exits cleanly.

Why every step guards against a non-finite update (rather than checking at log steps only, as
big_vision does): a step whose loss, gradients, parameters or statistics are not finite returns
the state it was given, so the state the loop holds is always the last good one, and the check
that stops the run reads the flag one step behind (no host sync on the hot path). A checkpoint
can then never hold NaNs, even one written by SIGTERM or by an error between two log steps, and
the run stops on the first bad step, naming it. The cost is one select per array per step,
small against the convolutions.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import signal
import sys
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
from fer_jax.data import crops as crops_lib
from fer_jax.data import memory
from fer_jax.data import mixing
from fer_jax.data import pipeline
from fer_jax import errors
from fer_jax import files
from fer_jax import jsonl
from fer_jax import losses
from fer_jax.modes import Args
from fer_jax.modes import evaluate as eval_lib
from fer_jax import parallel
from fer_jax import plots
from fer_jax import state as state_lib
from fer_jax import validation


# What a step checks for NaN or Inf, in the order the error message names them.
FINITE_CHECKS = ("loss", "gradient norm", "parameters", "BatchNorm statistics")


def train_step(state: state_lib.TrainState, batch: dict[str, jax.Array], *, model, tx, lr_fn,
               inputs_fn, loss_fn, branch_names: tuple[str, ...], ema_decay: float = 0.0,
               mix_fn=None, axis_name: str = parallel.DATA_AXIS):
  """One SGD step on this device's share of the global batch (pmap semantics).

  `inputs_fn(batch)` gives the model's input [b, nb, S, S, C] (the crops); `loss_fn(out, batch,
  key)` the loss and its parts (`losses.make_loss_fn`); `mix_fn(x, targets, index)` mixes the
  inputs and their targets (`mixing.MIXES`; None: no mixing). A step whose loss is not finite
  leaves the state as it was (and says so in `metrics['finite']`), so that the state the loop
  holds is always the last good one.
  """
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
  x = inputs_fn(batch)
  if mix_fn is not None:
    x, target = mix_fn(x, batch["target"], batch["index"], axis_name=axis_name)
    batch = dict(batch, target=target)
  dropout_key = jax.random.fold_in(jax.random.fold_in(step_key, 1), lax.axis_index(axis_name))

  def compute_loss(params):
    out, mutated = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                               train=True, mutable=["batch_stats"], rngs={"dropout": dropout_key})
    loss, parts = loss_fn(out, batch, step_key)
    return loss, (out, parts, mutated["batch_stats"])

  (loss, (out, parts, batch_stats)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
      state.params)
  grads = lax.pmean(grads, axis_name)
  batch_stats = lax.pmean(batch_stats, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  mu = out["mu"]
  accuracy = jnp.mean(jnp.argmax(out["logits"], -1) == jnp.argmax(batch["target"], -1))
  metrics = dict(loss=loss, **parts, accuracy=accuracy,
                 **{f"mu/{name}": jnp.mean(mu[:, i]) for i, name in enumerate(branch_names)})
  metrics = lax.pmean(metrics, axis_name)
  metrics["learning_rate"] = lr_fn(state.step)
  metrics["grad_norm"] = optax.tree.norm(grads)
  checks = dict(zip(FINITE_CHECKS, (
      jnp.isfinite(metrics["loss"]), jnp.isfinite(metrics["grad_norm"]),
      jnp.isfinite(optax.tree.norm(params)), jnp.isfinite(optax.tree.norm(batch_stats)))))
  finite = functools.reduce(jnp.logical_and, checks.values())
  metrics["finite"] = finite
  metrics["finite_parts"] = checks
  ema = state.ema
  if ema is not None:
    ema = state_lib.ema_update(ema, {"params": params, "batch_stats": batch_stats},
                               state_lib.ema_decay_at(ema_decay, state.step))
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema=ema)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
  return new_state, metrics


def train_sizes(config: ml_collections.ConfigDict, steps_per_epoch: int) -> list[tuple[int, int]]:
  """Progressive resizing as [(first step, crop size), ...] from `config.data.train_sizes`
  (((until_epoch, size), ...), then `data.crops.size` to the end); one entry without it."""
  sizes, start = [], 0
  for pair in tuple(config.data.train_sizes):
    if len(pair) != 2 or int(pair[1]) < 4 or float(pair[0]) <= 0:
      raise ValueError("config.data.train_sizes must be ((until_epoch, size), ...) with "
                       f"epochs > 0 and sizes >= 4, got {tuple(config.data.train_sizes)}")
    until = int(round(float(pair[0]) * steps_per_epoch))
    if until <= start:
      raise ValueError("config.data.train_sizes' epochs must increase, got "
                       f"{tuple(config.data.train_sizes)}")
    sizes.append((start, int(pair[1])))
    start = until
  return sizes + [(start, int(config.data.crops.size))]


def size_at(sizes: list[tuple[int, int]], step: int) -> int:
  """The training crop size at `step` under `train_sizes`' schedule."""
  return [size for first, size in sizes if first <= step][-1]


def make_train_step(config: ml_collections.ConfigDict, mesh, tx, lr_fn, size: int | None = None):
  """The jitted, shard_mapped train step. With `data.source="grain"`: (state, global batch)
  -> (state, metrics); with "memory": (state, arrays, order table, its first step) -> (state,
  metrics), the step gathering its batch itself (`memory.gather`). `size` replaces the crop
  size (progressive resizing); the parameters do not depend on it (global average pooling)."""
  crop_cfg = state_lib.crop_config(config)
  if size is not None and size != crop_cfg.size:
    crop_cfg = dataclasses.replace(crop_cfg, size=int(size)).validate()
  inputs_fn = functools.partial(crops_lib.model_inputs, cfg=crop_cfg, seed=config.seed,
                                train=True, crops_on=config.data.crops_on)
  loss_fn = losses.make_loss_fn(
      kind=losses.classification_kind(config.data.label_mode, config.loss.classification),
      label_mode=config.data.label_mode, constraint=state_lib.constraint_indices(config),
      margin=config.loss.margin, constraint_weight=config.loss.constraint_weight,
      aux_weight=config.loss.aux_weight)
  fn = functools.partial(
      train_step, model=state_lib.build_model(config, data_axis_name=parallel.DATA_AXIS),
      tx=tx, lr_fn=lr_fn, inputs_fn=inputs_fn, loss_fn=loss_fn,
      branch_names=crop_cfg.branches, ema_decay=config.optimizer.ema_decay,
      mix_fn=None if config.data.mix == "none" else functools.partial(
          mixing.MIXES[config.data.mix], seed=config.seed, alpha=config.data.mix_alpha))
  if config.data.source == "memory":
    per_device = functools.partial(_gathering_step, fn, global_batch=config.batch_size)
    # the arrays whole on every device; the order table's columns (examples) split
    in_specs = (parallel.REPLICATED, parallel.REPLICATED, P(None, parallel.DATA_AXIS),
                parallel.REPLICATED)
  else:
    per_device, in_specs = fn, (parallel.REPLICATED, parallel.SHARDED)
  return parallel.data_parallel(per_device, mesh, in_specs,
                                (parallel.REPLICATED, parallel.REPLICATED), donate_argnums=(0,))


def _gathering_step(step_fn, state, arrays, table, first_step, *, global_batch: int):
  return step_fn(state, memory.gather(arrays, table, first_step, state.step, global_batch))


def init_state(config: ml_collections.ConfigDict, mesh, tx) -> state_lib.TrainState:
  """A fresh state from `config.seed`, replicated over the mesh."""
  model = state_lib.build_model(config)
  create = jax.jit(lambda k: state_lib.create_train_state(config, model, tx, k),
                   out_shardings=parallel.replicated(mesh))
  return create(jax.random.key(config.seed))


STEP_INPUTS = ("image", "landmarks", "crops", "index", "target")


def tensorboard_writer(folder: pathlib.Path):
  """tensorboardX's SummaryWriter, or None where tensorboardX is not installed. Its import is
  kept from importing torch (1.7 s, only for a type check this project never meets) unless torch
  is already loaded."""
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning("tensorboardX is not installed: no TensorBoard logs")
    return None
  finally:
    if hide:
      del sys.modules["torch"]
  return SummaryWriter(str(folder))


class MetricWriter:
  """metrics.jsonl, TensorBoard (tensorboardX) and the terminal's progress lines, written by
  process 0 only."""

  def __init__(self, workdir: pathlib.Path, resume_step: int, num_steps: int = 0,
               steps_per_epoch: int = 1, branch_names=()):
    self.enabled = parallel.is_main()
    self.num_steps, self.steps_per_epoch = num_steps, steps_per_epoch
    self.branch_names = list(branch_names)
    self.path = workdir / "metrics.jsonl"
    self._tb = None
    if not self.enabled:
      return
    if self.path.exists():  # drop lines of steps that the resumed run will redo
      keep = [json.dumps(r) for r in jsonl.read_metrics(self.path) if r["step"] <= resume_step]
      files.write_text(self.path, "".join(l + "\n" for l in keep))
    self._tb = tensorboard_writer(workdir / "tensorboard")

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

  def train_window(self, step: int, window: list[dict[str, Any]], seconds: float,
                   steps: int) -> None:
    """Writes the mean of a window of step metrics and logs the progress line."""
    host = jax.device_get(window)
    if not host:
      return
    mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]
            if not k.startswith("finite")}
    rate = steps / max(seconds, 1e-9)
    self.write(step, "train", dict(mean, steps_per_second=rate))
    hinge = f" (active {mean['hinge_active']:.2f})" if "hinge_active" in mean else ""
    logging.info(
        "step %d/%d (epoch %.2f): loss %.4f ce %.4f constraint %.4f%s acc %.3f lr %.3g | mu %s | "
        "%.2f steps/s, ETA %s", step, self.num_steps, step / self.steps_per_epoch, mean["loss"],
        mean["ce"], mean["constraint"], hinge, mean["accuracy"], mean["learning_rate"],
        " ".join(f"{n}={mean[f'mu/{n}']:.3f}" for n in self.branch_names), rate,
        _format_eta((self.num_steps - step) / max(rate, 1e-9)))

  def close(self):
    if self._tb is not None:
      self._tb.close()


def itstime(step: int, every: int, last: int) -> bool:
  """Whether periodic work is due after `step` (every `every` steps, and after the last one),
  as big_vision's `u.itstime`."""
  return step == last or (every > 0 and step % every == 0)


class Preemption:
  """SIGTERM -> save a checkpoint at the next step boundary and exit cleanly.

  A SIGTERM that an enclosing handler (a study's `study.Budget`) took before training began,
  while the data and the model were being prepared, counts too: the handler it replaces says
  so with a true `stopped` attribute on the object it is a method of, and the run saves and
  stops at its first step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._previous = None
    if getattr(getattr(self._previous, "__self__", None), "stopped", False):
      logging.warning("SIGTERM came while the run was being prepared: checkpointing at the "
                      "first step, then exiting")
      self.requested = True
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("SIGTERM received: checkpointing at the next step, then exiting")
    self.requested = True
    outer = getattr(self._previous, "__self__", None)
    if hasattr(outer, "stopped"):  # the enclosing study stops after this run too
      self._previous(signum, None)

  def should_stop(self) -> bool:
    return parallel.any_process(self.requested)

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def resume(config: ml_collections.ConfigDict, mgr, target: state_lib.TrainState,
           data) -> tuple[int, state_lib.TrainState]:
  """(step, state) of the newest checkpoint that restores, with `data` (a `DATA_SOURCES`
  source) put where it was.

  Damaged newer steps are named in a warning and moved aside (`checkpoint.set_aside`), so the
  run writes those steps again; a checkpoint of another architecture is an error (another
  recipe, the batch size included, was refused before: `checkpoint.check_resume`).
  """
  def restore(step):
    state = ckpt_lib.restore_state(mgr, step, target)
    data.position_at(step, mgr)
    return state

  step, state = ckpt_lib.restore_first(mgr, "latest", restore)
  damaged = [s for s in mgr.all_steps() if s > step]
  if damaged:
    if parallel.is_main():
      ckpt_lib.set_aside(mgr, damaged)
    parallel.sync("damaged checkpoints set aside")
    mgr.reload()
  return step, state


class GrainData:
  """`data.source="grain"`: a host iterator (`pipeline.train_dataset`) whose position
  checkpoints hold (`checkpointed`); the step receives each global batch."""

  def __init__(self, config: ml_collections.ConfigDict, split: pipeline.Split, mesh):
    self.config, self.split, self.mesh = config, split, mesh
    self.checkpointed = iter(self._dataset(0))  # the iterator, saved with each checkpoint

  def _dataset(self, first_batch: int):
    c = self.config
    return pipeline.train_dataset(
        self.split, global_batch=c.batch_size, seed=c.seed, process_index=jax.process_index(),
        process_count=jax.process_count(),
        host_crops=state_lib.crop_config(c) if c.data.crops_on == "host" else None,
        worker_count=c.data.worker_count, prefetch=c.data.prefetch, start_batch=first_batch)

  def position_at(self, step: int, mgr) -> None:
    """The iterator of checkpoint `step` when it holds this process layout's, else one
    positioned by step."""
    if not ckpt_lib.restore_data(mgr, step, self.checkpointed):
      self.checkpointed = iter(self._dataset(step))

  def inputs(self, step: int) -> tuple[Any, ...]:
    """The train step's arguments after the state, for global batch `step`."""
    del step  # the iterator is at it
    batch = next(self.checkpointed)
    return (parallel.global_batch({k: v for k, v in batch.items() if k in STEP_INPUTS},
                                  self.mesh),)


class MemoryData:
  """`data.source="memory"`: the split on the devices (`memory.load`) and the order as tables
  of `TABLE_STEPS` batches, sent once per table; the step gathers its own batch, and the data
  position is the step itself (nothing to checkpoint). It reads the same stream as GrainData
  (`pipeline.shuffled_stream`)."""

  TABLE_STEPS = 512  # batches per order table (a fixed shape: the step compiles once)
  checkpointed = None

  def __init__(self, config: ml_collections.ConfigDict, split: pipeline.Split, mesh):
    self.config, self.split, self.mesh = config, split, mesh
    self._table, self._first, self._first_array = None, None, None  # the order table in use
    t0 = time.time()
    self.arrays = memory.load(split, mesh)
    logging.info("placed %d training faces on %d devices (%.0f MB each) in %.1fs", len(split),
                 len(mesh.devices.flat),
                 sum(a.nbytes for a in self.arrays.values()) / 2**20, time.time() - t0)

  def position_at(self, step: int, mgr) -> None:
    del step, mgr  # the order table of any step is computed from the step

  def inputs(self, step: int) -> tuple[Any, ...]:
    """The train step's arguments after the state, for global batch `step`."""
    if self._first is None or not 0 <= step - self._first < self.TABLE_STEPS:
      table = memory.order_table(len(self.split), self.config.seed, self.config.batch_size,
                                 step, self.TABLE_STEPS)
      self._table = memory.place_table(table, self.mesh)
      self._first = step
      self._first_array = jax.make_array_from_callback(
          (), parallel.replicated(self.mesh), lambda _: np.int32(step))
    return self.arrays, self._table, self._first_array


# `config.data.source` -> where the training batches come from. Each has `inputs(step)` (the
# train step's arguments after the state), `position_at(step, mgr)` (where a run resumed at
# `step` left the data) and `checkpointed` (what a checkpoint saves of its position, or None).
DATA_SOURCES = {"grain": GrainData, "memory": MemoryData}


def train_data(config: ml_collections.ConfigDict, split: pipeline.Split, mesh):
  return DATA_SOURCES[config.data.source](config, split, mesh)


class Steps:
  """The jitted train and eval steps by crop size, each compiled when the schedule first
  reaches its size (progressive resizing; one size otherwise)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh, tx, lr_fn,
               sizes: list[tuple[int, int]]):
    self.config, self.mesh, self.tx, self.lr_fn, self.sizes = config, mesh, tx, lr_fn, sizes
    self._train, self._eval = {}, {}

  def train(self, step: int):
    """The step that trains global batch `step`."""
    size = size_at(self.sizes, step)
    if size not in self._train:
      if len(self.sizes) > 1:
        logging.info("step %d: training on %d px crops", step, size)
      self._train[size] = make_train_step(self.config, self.mesh, self.tx, self.lr_fn, size)
    return self._train[size]

  def eval(self, step: int):
    """(config, eval step) at the crop size training is at after `step` steps (the last
    phase's, `crops.size`, at the end): a network in its 24 px phase, say, is not yet the
    one that sees 32 px crops."""
    size = size_at(self.sizes, step - 1)
    if size not in self._eval:
      eval_config = self.config.copy_and_resolve_references()
      eval_config.data.crops.size = size
      self._eval[size] = eval_config, eval_lib.make_eval_step(eval_config, self.mesh)
    return self._eval[size]


def evaluate_at(step: int, state: state_lib.TrainState, steps: Steps, eval_split, mesh,
                writer: "MetricWriter", use_ema: bool):
  """(metrics, mu) of the state after `step` steps on the evaluation split, logged as an
  `eval` row of metrics.jsonl."""
  eval_config, eval_step = steps.eval(step)
  metrics, mu = eval_lib.evaluate_split(eval_config, state.variables(use_ema), eval_split, mesh,
                                        eval_step)
  size = eval_config.data.crops.size
  metrics["checkpoint_step"] = step
  metrics["crop_size"] = size
  hinge = {} if metrics["hinge_active"] is None else dict(hinge_active=metrics["hinge_active"])
  writer.write(step, "eval", dict(accuracy=metrics["accuracy"], **hinge, crop_size=size,
                                  **{f"mu/{k}": v for k, v in
                                     metrics["mean_branch_weights"].items()}))
  return metrics, mu


def confirm_at(step: int, state: state_lib.TrainState, steps: Steps, split, mesh,
               writer: "MetricWriter", use_ema: bool):
  """(metrics, mu) of the final state on the confirmation split (`data.holdout`), logged as a
  `confirmation` row of metrics.jsonl (never an `eval` row: nothing selects on it)."""
  eval_config, eval_step = steps.eval(step)
  metrics, mu = eval_lib.evaluate_split(eval_config, state.variables(use_ema), split, mesh,
                                        eval_step)
  metrics["checkpoint_step"] = step
  writer.write(step, "confirmation", dict(accuracy=metrics["accuracy"]))
  return metrics, mu


def check_finite(step: int, metrics: dict[str, Any], mgr) -> None:
  """NonFiniteLossError naming what overflowed at `step`, and the last good checkpoint."""
  if bool(metrics["finite"]):
    return
  bad = [f"the {k}" for k in FINITE_CHECKS if not bool(metrics["finite_parts"][k])]
  bad = ", ".join(bad[:-1]) + (" and " if len(bad) > 1 else "") + bad[-1]
  raise errors.NonFiniteLossError(
      f"the training step overflowed at step {step}: {bad} "
      f"became non-finite (loss {float(metrics['loss'])}, gradient norm "
      f"{float(metrics['grad_norm'])}, learning rate {float(metrics['learning_rate']):.3g}); "
      f"stopped without saving. The last good checkpoint in {mgr.directory} is step "
      f"{mgr.latest_step()}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_changes: tuple[str, ...] = ()) -> dict[str, Any]:
  """Trains (or resumes) the run in `workdir`; returns the final evaluation metrics.

  A resume whose config changes what the run learns is refused (`checkpoint.check_resume`),
  but for the dotted keys of `allow_changes`, which a caller changes on purpose.

  `jax.distributed` is started by the caller (`cli.run`) when the run spans processes.
  """
  validation.validate(config)
  if config.data.eval_split == pipeline.CONFIRMATION:
    raise errors.ConfigError(f"config.data.eval_split={pipeline.CONFIRMATION!r}: the held-out "
                             "slice is never selected on during training (it is evaluated at "
                             "the end by itself); train with eval_split='validation'")
  pipeline.check_batch(config.batch_size, jax.process_count(), jax.device_count())
  pipeline.check_batch(config.eval_batch_size, jax.process_count(), jax.device_count())
  # Before any work, and before config.json is written:
  ckpt_lib.check_resume(config, workdir, allow_changes)
  workdir_path = pathlib.Path(workdir).resolve()
  workdir_path.mkdir(parents=True, exist_ok=True)
  mesh = parallel.make_mesh()
  crop_cfg = state_lib.crop_config(config)

  tfds_dir = pipeline.resolve_tfds_dir(config.data.tfds_dir, str(workdir_path))
  if parallel.is_main():
    pipeline.open_sources(tfds_dir, config.data.landmarks, config.data.manual_dir)
  parallel.sync("dataset prepared")
  sources = pipeline.open_sources(tfds_dir, config.data.landmarks, prepare_if_missing=False)
  train_split = pipeline.load_split(sources, config.data.train_split, config.data.label_mode,
                                    for_eval=False, **eval_lib.holdout(config))
  eval_split = eval_lib.load_eval_split(config, sources) if (
      config.data.eval_split or config.data.eval_list) else None
  confirmation = eval_lib.load_confirmation(config, sources)
  steps_per_epoch = pipeline.steps_per_epoch(train_split, config.batch_size)
  num_steps = state_lib.total_steps(config, steps_per_epoch)
  eval_every = (config.eval_every_steps if config.eval_every_steps > 0 else
                max(int(round(config.eval_every_epochs * steps_per_epoch)), 1))
  sizes = train_sizes(config, steps_per_epoch)
  ckpt_every = config.checkpoint_every_steps if config.checkpoint_every_steps > 0 else eval_every

  tx, lr_fn = state_lib.make_optimizer(config, steps_per_epoch)
  state = init_state(config, mesh, tx)
  nb = len(crop_cfg.branches)
  logging.info("model: %s parameters (backbone %s, %s); %d devices, "
               "%d processes; %d training examples (%s), %d steps per epoch, %d steps",
               f"{state_lib.count_params(state.params):,}",
               f"{state_lib.count_params(state.params['backbone']):,}",
               f"shared by {nb} branches" if nb > 1 else "one branch",
               jax.device_count(), jax.process_count(), len(train_split), config.data.source,
               steps_per_epoch, num_steps)

  mgr = ckpt_lib.manager(str(workdir_path), keep=config.keep_checkpoints)
  start = 0
  try:
    data = train_data(config, train_split, mesh)
    if mgr.latest_step() is not None:
      start, state = resume(config, mgr, state, data)
      logging.info("resumed from the checkpoint at step %d in %s", start, mgr.directory)
  except BaseException:
    mgr.close()
    raise

  config_json = config.to_json_best_effort()
  if parallel.is_main():
    files.write_text(workdir_path / "config.json", config_json)
  branch_names = list(crop_cfg.branches)
  writer = MetricWriter(workdir_path, start, num_steps, steps_per_epoch, branch_names)
  steps = Steps(config, mesh, tx, lr_fn, sizes)

  def save(step: int, metrics=None, force=False):
    ckpt_lib.save(mgr, step, state, data.checkpointed, config_json,
                  None if metrics is None else dict(accuracy=metrics["accuracy"]), force=force)

  step, final, confirmed = start, None, None
  pending, window = [], []  # metrics of steps not yet checked; of steps not yet logged
  t_log, step_log = time.time(), start
  try:
    with Preemption() as preemption:
      while step < num_steps:
        state, metrics = steps.train(step)(state, *data.inputs(step))
        step += 1
        pending.append((step, metrics))
        # Check the previous step while this one runs; check everything before a save.
        drain = (itstime(step, eval_every, num_steps) or itstime(step, ckpt_every, num_steps)
                 or itstime(step, config.log_every_steps, num_steps))
        while len(pending) > (0 if drain else 1):
          done_step, done = pending.pop(0)
          check_finite(done_step, done, mgr)
          window.append(done)
        if itstime(step, config.log_every_steps, num_steps):
          writer.train_window(step, window, time.time() - t_log, step - step_log)
          window, t_log, step_log = [], time.time(), step
        if step == num_steps:
          break
        evaluated = None
        if eval_split is not None and itstime(step, eval_every, num_steps):
          evaluated = evaluate_at(step, state, steps, eval_split, mesh, writer, config.eval_ema)
        if itstime(step, ckpt_every, num_steps) or evaluated:
          # An evaluation at another crop size than the final one is no candidate for the best.
          final_size = evaluated and evaluated[0]["crop_size"] == config.data.crops.size
          save(step, evaluated[0] if final_size else None)
        if preemption.should_stop():
          for done_step, done in pending:
            check_finite(done_step, done, mgr)
          logging.warning("preempted at step %d: saving and exiting", step)
          if mgr.latest_step() != step:  # unless this very step was just saved
            save(step, force=True)
          return dict(preempted=True, step=step)
      if eval_split is not None and config.eval_at_end:
        final = evaluate_at(step, state, steps, eval_split, mesh, writer, config.eval_ema)
      if confirmation is not None and config.eval_at_end:
        confirmed = confirm_at(step, state, steps, confirmation, mesh, writer, config.eval_ema)
      if mgr.latest_step() != step:
        save(step, final[0] if final else None, force=True)
  except errors.NonFiniteLossError:
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
    raise
  finally:
    mgr.wait_until_finished()
    mgr.close()  # Orbax's background machinery, stopped before the interpreter tears down
    writer.close()

  result: dict[str, Any] = dict(step=step, train_examples=len(train_split))
  if confirmed is not None:
    result["confirmation_accuracy"] = confirmed[0]["accuracy"]
    if parallel.is_main():
      path = eval_lib.write_results(str(workdir_path), confirmation.name, *confirmed,
                                    branch_names, config.plots)
      logging.info("final evaluation on the held-out %s slice of %s: accuracy %.4f (%d "
                   "examples); wrote %s", confirmation.name, config.data.train_split,
                   confirmed[0]["accuracy"], confirmed[0]["num_examples"], path)
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


def main(args: Args) -> dict[str, Any]:
  """`--mode=train`."""
  return train_and_evaluate(args.config, args.workdir)
