"""The model and train state a config describes: built the same way by training, evaluation
and prediction, so that a checkpoint restores into a state shaped from its config."""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from fer_jax.data import crops as crops_lib
from fer_jax.data import labels as labels_lib
from fer_jax.models import backbones
from fer_jax.models import branch_attention
from fer_jax.models import lowering


@flax.struct.dataclass
class TrainState:
  """Everything a training run carries from step to step.

  `key` is raw PRNG key data (uint32 [2]) so that Orbax saves it as a plain array; use
  `jax.random.wrap_key_data(state.key)`. `ema` holds exponential moving averages of the
  parameters and BatchNorm statistics (`{"params", "batch_stats"}`) when
  `config.optimizer.ema_decay > 0`, else None (and the checkpoint has no such item).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array
  ema: Any = None

  def variables(self, ema: bool = False) -> dict[str, Any]:
    """The model variables: the moving averages when `ema` and the run keeps them."""
    if ema and self.ema is not None:
      return dict(self.ema)
    return {"params": self.params, "batch_stats": self.batch_stats}


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The decay of update `step` (0-based): min(decay, (1 + step) / (10 + step)), as
  `tf.train.ExponentialMovingAverage(num_updates=step)`. The ramp (0.1 at step 0, 0.99 at
  step 890, 0.998 from step 4,490) keeps early evaluations off the random initialisation."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema, variables, decay: jax.Array):
  """ema <- decay * ema + (1 - decay) * variables, leaf by leaf."""
  return jax.tree.map(lambda e, v: decay * e + (1.0 - decay) * v, ema, variables)


def build_model(config: ml_collections.ConfigDict, *, platform: str | None = None,
                data_axis_name: str | None = None) -> branch_attention.BranchAttentionNet:
  """The BranchAttentionNet of `config.model`, its convolutions lowered as `config.lowering`
  says for `platform` (BatchNorm synchronised over `data_axis_name`)."""
  m = config.model
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if m.dtype not in dtypes:
    raise ValueError(f"config.model.dtype must be float32 or bfloat16, got {m.dtype!r}")
  platform = platform or jax.default_backend()
  low = config.lowering
  backbone = backbones.backbone(m, conv=lowering.conv_module(low, platform),
                                pool=lowering.pool_for(low, platform), dtype=dtypes[m.dtype])
  part_size, parts = part_branches(config)
  branches = tuple(config.data.crops.branches)
  chosen = tuple(branches.index(n) for n in config.model.inference_branches
                 if n in branches)
  return branch_attention.BranchAttentionNet(
      aux_heads=config.loss.aux_weight > 0, inference_branches=chosen,
      num_classes=labels_lib.NUM_CLASSES, backbone=backbone,
      attention_hidden=m.attention_hidden, fusion=m.fusion,
      branch_axis=lowering.branch_axis_for(low, platform),
      data_axis_name=data_axis_name if m.sync_batch_stats else None,
      part_size=part_size, part_branches=parts)


def part_branches(config: ml_collections.ConfigDict) -> tuple[int, tuple[int, ...]]:
  """(config.model.part_size, the positions of the landmark-region branches: every name of
  `config.data.crops.branches` that is not a whole-face kind of `crops.BRANCH_KINDS`), validated:
  0 (off) or 0 < part_size < data.crops.size, with a globally pooled backbone."""
  part_size = int(config.model.part_size)
  size = int(config.data.crops.size)
  if part_size < 0 or part_size >= size and part_size != 0:
    raise ValueError(f"config.model.part_size must be 0 (off) or in [1, data.crops.size = "
                     f"{size}), got {part_size}")
  if part_size and config.model.backbone not in backbones.POOLED:
    raise ValueError(f"config.model.part_size={part_size} needs a backbone whose features are "
                     f"globally pooled ({', '.join(backbones.POOLED)}), got "
                     f"config.model.backbone={config.model.backbone!r}")
  parts = tuple(i for i, name in enumerate(config.data.crops.branches)
                if name not in crops_lib.BRANCH_KINDS)
  return part_size, parts


def crop_config(config: ml_collections.ConfigDict) -> crops_lib.CropConfig:
  return crops_lib.from_config(config.data.crops.to_dict())


def constraint_indices(config: ml_collections.ConfigDict) -> tuple[int, int] | None:
  """Positions (hi, lo) of the constraint's two branches (eyes, occluded) in the branch list,
  or None when the run has no constraint term: `loss.constraint_weight` is 0, the pair is
  empty, or `model.fusion` is `none` (no branch weights to constrain). A nonzero weight whose
  pair names a branch the run does not have is an error that names both."""
  branches = tuple(config.data.crops.branches)
  pair = tuple(config.loss.constraint_pair)
  if config.loss.constraint_weight == 0 or not pair or config.model.fusion == "none":
    return None
  if len(pair) != 2:
    raise ValueError(f"config.loss.constraint_pair must name two branches (hi, lo), got {pair}")
  for name in pair:
    if name not in branches:
      raise ValueError(
          f"config.loss.constraint_pair {pair} names branch {name!r}, which is not in "
          f"config.data.crops.branches {branches}; add it, or drop the constraint with "
          f"--config.loss.constraint_weight=0")
  return branches.index(pair[0]), branches.index(pair[1])


def _paper_literal(opt, base: float, steps_per_epoch: int, total: int, warmup: int):
  """x0.1 after every epoch, as the paper prints it."""
  return optax.exponential_decay(base, transition_steps=steps_per_epoch, decay_rate=0.1,
                                 staircase=True)


def _step(opt, base: float, steps_per_epoch: int, total: int, warmup: int):
  """x decay_factor every decay_epochs."""
  return optax.exponential_decay(base, max(int(round(opt.decay_epochs * steps_per_epoch)), 1),
                                 opt.decay_factor, staircase=True)


def _cosine(opt, base: float, steps_per_epoch: int, total: int, warmup: int):
  """Cosine decay to 0 at the end of training (after the warmup)."""
  return optax.cosine_decay_schedule(base, max(total - warmup, 1))


def _constant(opt, base: float, steps_per_epoch: int, total: int, warmup: int):
  """The base rate throughout."""
  return optax.constant_schedule(base)


# `config.optimizer.schedule` -> the schedule after the warmup:
# (optimizer config, base rate, steps per epoch, total steps, warmup steps) -> lr(step).
SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "paper_literal": _paper_literal, "step": _step, "cosine": _cosine, "constant": _constant}


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Callable:
  """lr(step) for `config.optimizer.schedule` (`SCHEDULES`), after a linear warmup of
  `optimizer.warmup_epochs` from 0."""
  opt = config.optimizer
  base = opt.learning_rate
  total = total_steps(config, steps_per_epoch)
  warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  if opt.schedule not in SCHEDULES:
    raise ValueError(f"config.optimizer.schedule must be one of {tuple(SCHEDULES)}, "
                     f"got {opt.schedule!r}")
  main = SCHEDULES[opt.schedule](opt, base, steps_per_epoch, total, warmup)
  if warmup > 0:
    return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])
  return main


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(int(round(config.num_epochs * steps_per_epoch)), 1)


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, Callable]:
  """SGD with momentum and weight decay on kernels; returns (tx, lr schedule)."""
  opt = config.optimizer
  lr = learning_rate_schedule(config, steps_per_epoch)
  parts = []
  if opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.weight_decay > 0:
    parts.append(optax.add_decayed_weights(
        opt.weight_decay, mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params)))
  parts.append(optax.sgd(lr, momentum=opt.momentum or None, nesterov=opt.nesterov))
  return optax.chain(*parts), lr


def input_shape(config: ml_collections.ConfigDict, batch: int = 1) -> tuple[int, ...]:
  c = config.data.crops
  return (batch, len(c.branches), c.size, c.size, 1)


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
  """A fresh state: parameters from `key`, zero optimizer state, step 0."""
  init_key, state_key = jax.random.split(key)
  variables = model.init(init_key, jnp.zeros(input_shape(config, 2), jnp.float32), train=False)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  ema = None
  if config.optimizer.ema_decay > 0:
    ema = {"params": params, "batch_stats": batch_stats}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), key=jax.random.key_data(state_key), ema=ema)


def abstract_train_state(config: ml_collections.ConfigDict, steps_per_epoch: int = 1) -> TrainState:
  """The shapes and dtypes of a train state for `config`, computed without any FLOPs."""
  model = build_model(config, platform="cpu")
  tx, _ = make_optimizer(config, steps_per_epoch)
  return jax.eval_shape(lambda k: create_train_state(config, model, tx, k),
                        jax.random.key(0))


def count_params(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))
