"""BranchAttentionNet: one shared ResNet over the branch axis, a sigmoid weight per branch,
weighted fusion and a linear classifier (METHOD.md sections 2-5).

    x [B, nb, S, S, C] --backbone (shared params and batch_stats)--> F [B, nb, D]
    mu = sigmoid(W2 relu(W1 F))                                       [B, nb]   (eq. 1)
    F_m = sum_i mu_i F_i  (weighted_sum)  or  / sum_i mu_i (weighted_mean)      (eq. 2)
    logits = W_c F_m                                                  [B, classes]

The number of branches is read from the input, so branches are added or dropped in the data
config alone. The backbone runs either as `nn.vmap` over the branch axis (`branch_axis='vmap'`,
BatchNorm averaging its statistics over the vmapped axis too) or on the branches folded into
the batch (`'fold'`); both have the same parameters and compute the same function.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import resnet

FUSIONS = ("weighted_sum", "weighted_mean")
BRANCH_AXES = ("vmap", "fold")
BRANCH_AXIS_NAME = "branch"


def fuse(mu: jnp.ndarray, features: jnp.ndarray, fusion: str) -> jnp.ndarray:
  """mu [B, nb], features [B, nb, D] -> F_m [B, D] (eq. 2, or RAN's normalised form)."""
  if fusion not in FUSIONS:
    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
  fused = jnp.einsum("bn,bnd->bd", mu, features)
  if fusion == "weighted_mean":
    fused = fused / jnp.sum(mu, axis=1, keepdims=True)
  return fused


class BranchAttentionNet(nn.Module):
  """The occlusion-robust multi-branch expression classifier.

  Attributes:
    num_classes: output classes (8 for FERPlus).
    depth, width, stem, conv_impl, small_conv_impl, small_map_pixels, bn_momentum: the
      backbone (`ResNet`).
    attention_hidden: width of W1.
    fusion: `weighted_sum` (the paper) or `weighted_mean` (RAN).
    branch_axis: `vmap` or `fold` (see the module docstring).
    data_axis_name: the data-parallel axis name when BatchNorm statistics are synchronised
      across devices (inside `shard_map`), else None.
    dtype: compute dtype of the backbone (parameters stay float32).
  """
  num_classes: int = 8
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  conv_impl: str = "xla"
  small_conv_impl: str = "matmul"
  small_map_pixels: int = 0
  bn_momentum: float = 0.9
  attention_hidden: int = 128
  fusion: str = "weighted_sum"
  branch_axis: str = "vmap"
  data_axis_name: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True) -> dict[str, Any]:
    if x.ndim != 5:
      raise ValueError(f"BranchAttentionNet takes [batch, branches, S, S, C], got {x.shape}")
    if self.fusion not in FUSIONS:
      raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
    if self.branch_axis not in BRANCH_AXES:
      raise ValueError(f"branch_axis must be one of {BRANCH_AXES}, got {self.branch_axis!r}")
    b, nb = x.shape[:2]
    backbone_kwargs = dict(depth=self.depth, width=self.width, stem=self.stem,
                           conv_impl=self.conv_impl, small_conv_impl=self.small_conv_impl,
                           small_map_pixels=self.small_map_pixels,
                           bn_momentum=self.bn_momentum, dtype=self.dtype)
    data_axes = () if self.data_axis_name is None else (self.data_axis_name,)
    if self.branch_axis == "vmap":
      # Branch-major layout: vmapping axis 0 lets XLA merge the branch axis into the batch
      # with a free reshape; vmapping axis 1 makes it transpose every activation.
      shared = nn.vmap(resnet.ResNet, in_axes=(0, None), out_axes=1,
                       variable_axes={"params": None, "batch_stats": None},
                       split_rngs={"params": False}, axis_name=BRANCH_AXIS_NAME)
      backbone = shared(bn_axis_name=(BRANCH_AXIS_NAME,) + data_axes, name="backbone",
                        **backbone_kwargs)
      features = backbone(jnp.swapaxes(x, 0, 1), train)  # [B, nb, D]
    else:
      backbone = resnet.ResNet(bn_axis_name=data_axes or None, name="backbone", **backbone_kwargs)
      features = backbone(x.reshape((b * nb,) + x.shape[2:]), train).reshape(b, nb, -1)

    hidden = nn.relu(nn.Dense(self.attention_hidden, name="attention_hidden")(features))
    mu = nn.sigmoid(nn.Dense(1, name="attention_out")(hidden))[..., 0]  # [B, nb]
    fused = fuse(mu, features, self.fusion)
    # A zero classifier starts every logit at 0 (loss ln 8): a random one starts with large
    # logits that the network cheapest shrinks by driving every mu to 0, where the sigmoid
    # saturates and the branches never recover.
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                      name="classifier")(fused)
    return dict(logits=logits, mu=mu, features=features, fused=fused)
