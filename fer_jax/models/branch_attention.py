"""BranchAttentionNet: one shared backbone over the branch axis, a sigmoid weight per branch,
weighted fusion and a linear classifier (METHOD.md sections 2-5).

    x [B, nb, S, S, C] --backbone (shared params and batch_stats)--> F [B, nb, D]
    mu = sigmoid(W2 relu(W1 F))                                       [B, nb]   (eq. 1)
    F_m = sum_i mu_i F_i  (weighted_sum)  or  / sum_i mu_i (weighted_mean)      (eq. 2)
    logits = W_c F_m                                                  [B, classes]

`fusion="none"` drops the attention: F_m is the plain mean of the branch features and mu is 1
for every branch.

Multi-view training (`aux_heads`): each branch also gets its own linear classifier on its own
pooled feature, `aux_logits` [B, nb, classes], trained by `losses.auxiliary_loss`. With
`inference_branches` (positions), evaluation runs the backbone on those branches only and
classifies with the mean of their auxiliary classifiers' logits: the branches as a training
signal, one network's cost at inference; mu is then 1 for those branches and 0 for the others
(the weight each has in the prediction). With one branch (`data.crops.branches=("face",)`) that is the plain baseline
the paper compares against: backbone, pooled features, linear classifier.

The number of branches is read from the input, so branches are added or dropped in the data
config alone. The backbone is any module of `models/backbones.py` (a `functools.partial` of a
Module class taking `bn_axis_name` and `__call__(x, train)`). It runs either as `nn.vmap` over
the branch axis (`branch_axis='vmap'`, BatchNorm averaging its statistics over the vmapped axis
too) or on the branches folded into the batch (`'fold'`); both have the same parameters and
compute the same function.

Smaller part crops (`part_size`, `config.model.part_size`): the landmark-region branches
(`part_branches`, the positions of eyes, nose, mouth: every branch that is not a whole-face
kind of `crops.BRANCH_KINDS`) are resized inside the model from S x S to part_size x part_size
(`resize`: linear, antialiased, as `jax.image.resize`) and the backbone runs twice, once on the
whole-face group at S px and once on the part group at part_size px, to cut the convolutions' pixels (three
of five branches at 20 px instead of 32 is about 0.63x). The input stays one array
[B, nb, S, S, C], so data, export and prediction are unchanged; global average pooling makes D
independent of the size, and the features go back in branch order. Both calls are the same
submodule: one set of parameters and of batch_stats. In training BatchNorm's batch statistics
are then computed per group (the whole-face crops' apart from the parts'), and the running
averages are updated by both calls, the part group's on top of the whole-face group's (each
step moves them by momentum**2, the part group's statistics weighing (1 - m) against the other
group's m (1 - m)). A part_size of 0, or one >= the input's S (a smaller size of progressive
resizing), runs the single-group model.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from fer_jax.models import resnet

FUSIONS = ("weighted_sum", "weighted_mean", "none")
BRANCH_AXES = ("vmap", "fold")
BRANCH_AXIS_NAME = "branch"
ModuleDef = Any


def fuse(mu: jnp.ndarray, features: jnp.ndarray, fusion: str) -> jnp.ndarray:
  """mu [B, nb], features [B, nb, D] -> F_m [B, D] (eq. 2, RAN's normalised form, or the
  plain mean for `none`)."""
  if fusion not in FUSIONS:
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
  if fusion == "none":
    return jnp.mean(features, axis=1)
  fused = jnp.einsum("bn,bnd->bd", mu, features)
  if fusion == "weighted_mean":
    fused = fused / jnp.sum(mu, axis=1, keepdims=True)
  return fused


@functools.lru_cache(maxsize=None)
def resize_matrix(size: int, new_size: int) -> np.ndarray:
  """[size, new_size] float32 W with x @ W = `jax.image.resize(x, ..., method="linear",
  antialias=True)` along one axis: the triangle kernel widened by size / new_size when shrinking
  and normalised, as `jax.image.scale_and_translate` computes it. A constant matrix (rather than
  the resize itself) keeps the model exportable with a symbolic batch size (jax2onnx's resize
  needs static shapes)."""
  inv_scale = size / new_size
  kernel_scale = max(inv_scale, 1.0)
  sample = (np.arange(new_size) + 0.5) * inv_scale - 0.5
  w = np.maximum(0.0, 1.0 - np.abs(sample[None, :] - np.arange(size)[:, None]) / kernel_scale)
  total = w.sum(axis=0, keepdims=True)
  w = np.where(np.abs(total) > 1000 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1),
               0.0)
  inside = (sample >= -0.5) & (sample <= size - 0.5)
  return np.where(inside[None, :], w, 0.0).astype(np.float32)


def resize(x: jnp.ndarray, new_size: int) -> jnp.ndarray:
  """[B, n, S, S, C] -> [B, n, new_size, new_size, C], linear with antialiasing."""
  w = jnp.asarray(resize_matrix(x.shape[2], new_size), x.dtype)
  return jnp.einsum("bnhwc,hp,wq->bnpqc", x, w, w)


def _branches(x: jnp.ndarray, idx: tuple[int, ...]) -> jnp.ndarray:
  """x[:, idx] for static positions, as slices (no gather)."""
  if idx == tuple(range(x.shape[1])):
    return x
  return jnp.concatenate([x[:, i:i + 1] for i in idx], axis=1)


class BranchAttentionNet(nn.Module):
  """The occlusion-robust multi-branch expression classifier.

  Attributes:
    num_classes: output classes (8 for FERPlus).
    backbone: the shared backbone, a `functools.partial` of a Module class (or the class).
    attention_hidden: width of W1.
    fusion: `weighted_sum` (the paper), `weighted_mean` (RAN) or `none` (no attention).
    branch_axis: `vmap` or `fold` (see the module docstring).
    data_axis_name: the data-parallel axis name when BatchNorm statistics are synchronised
      across devices (inside `shard_map`), else None.
    part_size: > 0: the side the `part_branches` are resized to before the backbone, when
      smaller than the input's S (see the module docstring); 0: off.
    part_branches: the positions, in the branch axis, of the landmark-region branches (static
      ints; `state.build_model` computes them from `config.data.crops.branches`).
  """
  num_classes: int = 8
  backbone: ModuleDef = functools.partial(resnet.ResNet, depth=50)
  attention_hidden: int = 128
  fusion: str = "weighted_sum"
  branch_axis: str = "vmap"
  data_axis_name: Any = None
  part_size: int = 0
  part_branches: tuple[int, ...] = ()
  aux_heads: bool = False
  inference_branches: tuple[int, ...] = ()

  def groups(self, nb: int, s: int) -> list[tuple[tuple[int, ...], int]]:
    """[(branch positions, side)]: the groups the backbone runs on, in call order."""
    parts = tuple(int(i) for i in self.part_branches)
    if any(not 0 <= i < nb for i in parts) or len(set(parts)) != len(parts):
      raise ValueError(f"part_branches must be distinct positions in [0, {nb}), got {parts}")
    if self.part_size < 0:
      raise ValueError(f"part_size must be >= 0, got {self.part_size}")
    if not (0 < self.part_size < s) or not parts:
      return [(tuple(range(nb)), s)]
    whole = tuple(i for i in range(nb) if i not in parts)
    return [(g, size) for g, size in ((whole, s), (tuple(sorted(parts)), self.part_size)) if g]

  @nn.compact
  def __call__(self, x, train: bool = True) -> dict[str, Any]:
    if x.ndim != 5:
      raise ValueError(f"BranchAttentionNet takes [batch, branches, S, S, C], got {x.shape}")
    if self.fusion not in FUSIONS:
      raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
    if self.branch_axis not in BRANCH_AXES:
      raise ValueError(f"branch_axis must be one of {BRANCH_AXES}, got {self.branch_axis!r}")
    b, nb = x.shape[:2]
    chosen = tuple(int(i) for i in self.inference_branches)
    if chosen and not self.aux_heads:
      raise ValueError("inference_branches classify with the branches' own classifiers: they "
                       "need aux_heads")
    if chosen and any(not 0 <= i < nb for i in chosen):
      raise ValueError(f"inference_branches must be positions in [0, {nb}), got {chosen}")
    if isinstance(self.backbone, functools.partial):
      cls, kwargs = self.backbone.func, dict(self.backbone.keywords)
    else:
      cls, kwargs = self.backbone, {}
    data_axes = () if self.data_axis_name is None else (self.data_axis_name,)
    if self.branch_axis == "vmap":
      # Branch-major layout: vmapping axis 0 lets XLA merge the branch axis into the batch
      # with a free reshape; vmapping axis 1 makes it transpose every activation.
      shared = nn.vmap(cls, in_axes=(0, None), out_axes=1,
                       variable_axes={"params": None, "batch_stats": None},
                       split_rngs={"params": False, "dropout": True},
                       axis_name=BRANCH_AXIS_NAME)
      backbone = shared(bn_axis_name=(BRANCH_AXIS_NAME,) + data_axes, name="backbone", **kwargs)
      run = lambda g: backbone(jnp.swapaxes(g, 0, 1), train)  # [B, n, D]
    else:
      backbone = cls(bn_axis_name=data_axes or None, name="backbone", **kwargs)
      run = lambda g: backbone(g.reshape((-1,) + g.shape[2:]), train).reshape(b, g.shape[1], -1)

    if chosen and not train and not self.is_initializing():
      return self._classify_views(x, chosen, run)
    groups = self.groups(nb, x.shape[2])
    if len(groups) == 1 and groups[0][1] == x.shape[2]:
      features = run(x)  # [B, nb, D]
    else:
      outs, order = [], []
      for idx, size in groups:
        g = _branches(x, idx)
        if size != x.shape[2]:
          g = resize(g, size)
        outs.append(run(g))
        order += idx
      features = jnp.concatenate(outs, axis=1)
      features = _branches(features, tuple(int(i) for i in np.argsort(order)))  # branch order

    if self.fusion == "none":
      mu = jnp.ones((b, nb), features.dtype)
    else:
      hidden = nn.relu(nn.Dense(self.attention_hidden, name="attention_hidden")(features))
      mu = nn.sigmoid(nn.Dense(1, name="attention_out")(hidden))[..., 0]  # [B, nb]
    fused = fuse(mu, features, self.fusion)
    # A zero classifier starts every logit at 0 (loss ln 8): a random one starts with large
    # logits that the network cheapest shrinks by driving every mu to 0, where the sigmoid
    # saturates and the branches never recover.
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                      name="classifier")(fused)
    out = dict(logits=logits, mu=mu, features=features, fused=fused)
    if self.aux_heads:
      out["aux_logits"] = jnp.stack([self._aux_head(i)(features[:, i]) for i in range(nb)], 1)
    return out

  def _aux_head(self, i: int) -> nn.Module:
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name=f"aux_{i}")

  def _classify_views(self, x, chosen: tuple[int, ...], run) -> dict[str, Any]:
    """Evaluation on `chosen` branches alone: their own classifiers' mean logits."""
    b, nb = x.shape[:2]
    parts = set(int(i) for i in self.part_branches)
    features = []
    for i in chosen:  # one backbone call per chosen branch, at its own size
      g = x[:, i:i + 1]
      if i in parts and 0 < self.part_size < x.shape[2]:
        g = resize(g, self.part_size)
      features.append(run(g)[:, 0])
    logits = jnp.mean(jnp.stack([self._aux_head(i)(f) for i, f in zip(chosen, features)]), 0)
    mu = jnp.zeros((b, nb), logits.dtype).at[:, jnp.asarray(chosen)].set(1.0)
    return dict(logits=logits, mu=mu, features=jnp.stack(features, 1),
                fused=jnp.mean(jnp.stack(features, 1), 1))
