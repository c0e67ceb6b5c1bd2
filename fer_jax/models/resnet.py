"""ResNet-10/18/34/50 backbones in Flax linen, sized for 48-112 px face crops.

The backbone maps one image [N, S, S, C] to a pooled feature vector [N, D]. It knows nothing of
branches, datasets or configs: `BranchAttentionNet` applies it over the branch axis. It takes
its convolution as a module (`conv`, `nn.Conv`-like, as flax's examples/imagenet does) and its
max pool as a function, so how they lower to XLA (`lowering.py`) is the caller's choice and
changes neither the parameters nor the numbers.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

STAGE_SIZES = {
    10: (1, 1, 1, 1),  # for tests and quick experiments
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
}
STEMS = ("imagenet", "small", "small_strided")
PlainConv = functools.partial(nn.Conv, use_bias=False)  # a `kernel` only, as `lowering.Conv`


def max_pool_3x3_s2(x):
  # window_shape by keyword, as jax2onnx's stand-in for nn.max_pool needs (lowering.pool_for).
  return nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")


def _shortcut(block: nn.Module, residual, y, features: int):
  """The identity, or a strided 1x1 projection when the block changes the shape."""
  if residual.shape == y.shape:
    return residual
  residual = block.conv(features, (1, 1), block.strides, name="conv_proj")(residual)
  return block.norm(name="norm_proj")(residual)


class ResNetBlock(nn.Module):
  """Basic block (two 3x3 convolutions) of ResNet-18/34."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    return nn.relu(_shortcut(self, residual, y, self.filters) + y)


class BottleneckResNetBlock(nn.Module):
  """Bottleneck block (1x1, 3x3, 1x1) of ResNet-50."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    return nn.relu(_shortcut(self, residual, y, self.filters * 4) + y)


class ResNet(nn.Module):
  """A ResNet trunk with global average pooling: [N, S, S, C] -> [N, D].

  Attributes:
    depth: 18, 34 or 50 (10 for tests).
    width: multiplier on the channel counts (64, 128, 256, 512 at width 1).
    stem: `imagenet` (7x7/2 conv, 3x3/2 max pool), `small` (3x3/1 conv, for 48-64 px inputs)
      or `small_strided` (3x3/2 conv).
    conv: the convolution module (`nn.Conv(use_bias=False)` or `lowering.Conv` partials).
    pool: the imagenet stem's 3x3 stride-2 'SAME' max pool.
    bn_axis_name: axis name(s) over which BatchNorm averages its batch statistics, e.g. the
      vmapped branch axis, or that plus the data-parallel axis for synchronised BatchNorm.
    bn_momentum: the running-average decay of BatchNorm.
    dtype: compute dtype (bfloat16 keeps float32 parameters and BatchNorm statistics).
  """
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  conv: ModuleDef = PlainConv
  pool: Callable = max_pool_3x3_s2
  bn_axis_name: Any = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.depth not in STAGE_SIZES:
      raise ValueError(f"ResNet depth must be one of {sorted(STAGE_SIZES)}, got {self.depth}")
    if self.stem not in STEMS:
      raise ValueError(f"ResNet stem must be one of {STEMS}, got {self.stem!r}")
    conv = functools.partial(self.conv, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                             axis_name=self.bn_axis_name)
    block = BottleneckResNetBlock if self.depth >= 50 else ResNetBlock
    width = lambda c: max(int(round(c * self.width)), 1)

    if self.stem == "imagenet":
      x = conv(width(64), (7, 7), (2, 2), name="conv_init")(x)
    else:
      x = conv(width(64), (3, 3), (2, 2) if self.stem == "small_strided" else (1, 1),
               name="conv_init")(x)
    x = nn.relu(norm(name="bn_init")(x))
    if self.stem == "imagenet":
      x = self.pool(x)
    for i, num_blocks in enumerate(STAGE_SIZES[self.depth]):
      for j in range(num_blocks):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = block(width(64 * 2**i), conv=conv, norm=norm, strides=strides)(x)
    return jnp.mean(x, axis=(-3, -2)).astype(jnp.float32)


def feature_dim(depth: int, width: float) -> int:
  """The length D of the pooled feature vector of `ResNet(depth, width)`."""
  last = max(int(round(512 * width)), 1)
  return last * 4 if depth >= 50 else last
