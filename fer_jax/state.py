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
from fer_jax.models import branch_attention

SCHEDULES = ("paper_literal", "step", "cosine", "constant")


@flax.struct.dataclass
class TrainState:
  """Everything a training run carries from step to step.

  `key` is raw PRNG key data (uint32 [2]) so that Orbax saves it as a plain array; use
  `jax.random.wrap_key_data(state.key)`.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  key: jax.Array

  def variables(self) -> dict[str, Any]:
    return {"params": self.params, "batch_stats": self.batch_stats}


CPU_CONV_IMPL = "matmul"  # the measured best on CPU (bench/RESULTS.md, bench/conv_lowering.py)


def conv_impl_for(model_cfg: ml_collections.ConfigDict, platform: str) -> str:
  """Resolves `model.conv_impl = 'auto'`: the measured best lowering on CPU, XLA elsewhere."""
  impl = model_cfg.conv_impl
  if impl == "auto":
    return CPU_CONV_IMPL if platform == "cpu" else "xla"
  return impl


def branch_axis_for(model_cfg: ml_collections.ConfigDict, platform: str) -> str:
  """Resolves `model.branch_axis = 'auto'`: `fold` on CPU (measured faster there: XLA:CPU
  transposes every activation in BatchNorm's backward under the vmapped branch axis), `vmap`
  elsewhere. Both compute the same function with the same parameters."""
  axis = model_cfg.branch_axis
  if axis == "auto":
    return "fold" if platform == "cpu" else "vmap"
  return axis


def build_model(config: ml_collections.ConfigDict, *, platform: str | None = None,
                data_axis_name: str | None = None) -> branch_attention.BranchAttentionNet:
  """The BranchAttentionNet of `config.model` (BatchNorm synchronised over `data_axis_name`)."""
  m = config.model
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if m.dtype not in dtypes:
    raise ValueError(f"config.model.dtype must be float32 or bfloat16, got {m.dtype!r}")
  platform = platform or jax.default_backend()
  return branch_attention.BranchAttentionNet(
      num_classes=labels_lib.NUM_CLASSES, depth=m.depth, width=m.width, stem=m.stem,
      conv_impl=conv_impl_for(m, platform), small_conv_impl=m.small_conv_impl,
      small_map_pixels=m.small_map_pixels if platform == "cpu" else 0,
      bn_momentum=m.bn_momentum, attention_hidden=m.attention_hidden, fusion=m.fusion,
      branch_axis=branch_axis_for(m, platform),
      data_axis_name=data_axis_name if m.sync_batch_stats else None, dtype=dtypes[m.dtype])


def crop_config(config: ml_collections.ConfigDict) -> crops_lib.CropConfig:
  return crops_lib.from_config(config.data.crops.to_dict())


def constraint_indices(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """Positions of the constraint's two branches (eyes, occluded) in the branch list."""
  branches = list(config.data.crops.branches)
  hi, lo = config.loss.constraint_pair
  for name in (hi, lo):
    if name not in branches:
      raise ValueError(f"config.loss.constraint_pair names branch {name!r}, which is not in "
                       f"config.data.crops.branches {branches}")
  return branches.index(hi), branches.index(lo)


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> Callable:
  """lr(step) for `config.optimizer.schedule`.

  - paper_literal: x0.1 after every epoch, as the paper prints it;
  - step: x decay_factor every decay_epochs;
  - cosine: linear warmup, then cosine decay to 0 at the end of training;
  - constant.
  """
  opt = config.optimizer
  base = opt.learning_rate
  total = total_steps(config, steps_per_epoch)
  warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  if opt.schedule == "paper_literal":
    main = optax.exponential_decay(base, transition_steps=steps_per_epoch, decay_rate=0.1,
                                   staircase=True)
  elif opt.schedule == "step":
    main = optax.exponential_decay(base, max(int(round(opt.decay_epochs * steps_per_epoch)), 1),
                                   opt.decay_factor, staircase=True)
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(base, max(total - warmup, 1))
  elif opt.schedule == "constant":
    main = optax.constant_schedule(base)
  else:
    raise ValueError(f"config.optimizer.schedule must be one of {SCHEDULES}, "
                     f"got {opt.schedule!r}")
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
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    key=jax.random.key_data(state_key))


def abstract_train_state(config: ml_collections.ConfigDict, steps_per_epoch: int = 1) -> TrainState:
  """The shapes and dtypes of a train state for `config`, computed without any FLOPs."""
  model = build_model(config, platform="cpu")
  tx, _ = make_optimizer(config, steps_per_epoch)
  return jax.eval_shape(lambda k: create_train_state(config, model, tx, k),
                        jax.random.key(0))


def count_params(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))
