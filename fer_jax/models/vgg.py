"""The VGG13-style network of FERPlus' own paper, as a backbone: [N, S, S, C] -> [N, D].

Barsoum, Zhang, Canton Ferrer and Zhang, "Training Deep Networks for Facial Expression
Recognition with Crowd-Sourced Label Distribution" (ICMI 2016), the dataset's reference model
(83.85% majority-vote test accuracy at 64 px, trained from scratch): ten 3x3 convolutions in
four groups of 64, 128, 256 and 256 channels (2, 2, 3, 3 layers), each group closed by a 2x2 max
pool and dropout 0.25, then two fully connected layers of 1024 with dropout 0.5. Their last
layer (the classifier) is `BranchAttentionNet`'s, so the backbone ends at the second 1024-wide
layer (D = 1024 x width).

One change, for training from scratch with this codebase's SGD recipes: a BatchNorm after each
convolution (the original, in CNTK, has none). It takes `conv` like `ResNet`, so the CPU
lowerings apply to it too, and its BatchNorm statistics are shared and synchronised in the same
way (`bn_axis_name`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fer_jax.models import resnet

ModuleDef = Any

GROUPS = ((64, 2), (128, 2), (256, 3), (256, 3))  # (channels, 3x3 layers) per pooled group


class VGG13(nn.Module):
  """Attributes:
    width: multiplier on every channel count and on the two 1024-wide layers.
    conv: the convolution module (as `ResNet.conv`).
    bn_axis_name, bn_momentum, dtype: as `ResNet`'s.
    dropout: whether the paper's dropout (0.25 per group, 0.5 per dense layer) is applied in
      training; it draws from the `dropout` PRNG stream.
  """
  width: float = 1.0
  conv: ModuleDef = resnet.PlainConv
  bn_axis_name: Any = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  dropout: bool = True

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(self.conv, dtype=self.dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5, dtype=self.dtype,
                             axis_name=self.bn_axis_name)
    width = lambda c: max(int(round(c * self.width)), 1)
    drop = lambda rate: nn.Dropout(rate, deterministic=not (train and self.dropout))
    for channels, layers in GROUPS:
      for _ in range(layers):
        x = nn.relu(norm()(conv(width(channels), (3, 3))(x)))
      # window_shape by keyword, as jax2onnx's stand-in for nn.max_pool needs (--mode=export).
      x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="SAME")
      x = drop(0.25)(x)
    x = x.reshape(x.shape[:-3] + (-1,))
    for _ in range(2):
      x = nn.relu(nn.Dense(width(1024), dtype=self.dtype)(x))
      x = drop(0.5)(x)
    return x.astype(jnp.float32)


def feature_dim(width: float) -> int:
  return max(int(round(1024 * width)), 1)
