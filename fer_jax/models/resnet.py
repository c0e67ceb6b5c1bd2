"""ResNet-18/34/50 backbones in Flax linen, sized for 48-112 px face crops.

The backbone maps one image [N, S, S, C] to a pooled feature vector [N, D]. It knows nothing of
branches, datasets or configs: `BranchAttentionNet` applies it over the branch axis.

Convolutions can run two ways that give the same numbers from the same parameters:
- `xla`: `lax.conv_general_dilated`, best on GPU and TPU;
- `matmul`: im2col (the kh*kw shifted views of the padded input, concatenated on the channel
  axis) followed by one matrix product. XLA:CPU runs 3x3 convolutions over tiny feature maps
  (the last stage at 48-64 px) at about 2 GFLOP/s, and its backward convolutions at several
  times the forward cost; as matmuls both run at the speed of the CPU's GEMM.
`conv_impl='matmul'` with `matmul_max_pixels=P` lowers only the convolutions whose output map
has at most P pixels (P <= 0: every convolution).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

ModuleDef = Any

STAGE_SIZES = {
    10: (1, 1, 1, 1),  # for tests and quick experiments
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
}
STEMS = ("imagenet", "small", "small_strided")
CONV_IMPLS = ("xla", "matmul")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow/Flax 'SAME' padding (low, high) along one spatial axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv_as_matmul(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
  """A 'SAME'-padded NHWC convolution computed as im2col followed by one matmul.

  Args:
    x: [N, H, W, Cin].
    kernel: [kh, kw, Cin, Cout] (Flax's HWIO layout).
    strides: (sh, sw).

  Returns:
    [N, Ho, Wo, Cout], equal to `lax.conv_general_dilated(..., padding='SAME')`.
  """
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x.shape
  sh, sw = strides
  ph, pw = same_padding(h, kh, sh), same_padding(w, kw, sw)
  ho, wo = -(-h // sh), -(-w // sw)
  if kh == kw == 1:
    cols = x[:, ::sh, ::sw, :]
  else:
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    views = [
        lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, cin),
                  (1, sh, sw, 1))
        for i in range(kh) for j in range(kw)
    ]
    cols = jnp.concatenate(views, axis=-1)  # [N, Ho, Wo, kh*kw*Cin], (i, j, c) order
  out = jnp.dot(cols.reshape(n * ho * wo, kh * kw * cin), kernel.reshape(kh * kw * cin, cout))
  return out.reshape(n, ho, wo, cout)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """3x3/2 'SAME' max pooling as the maximum of nine strided views.

  Equal to `nn.max_pool(x, (3, 3), (2, 2), 'SAME')` on the forward pass. Its gradient is a chain
  of elementwise selects that XLA fuses, where `reduce_window`'s gradient (select-and-scatter)
  costs XLA:CPU about a fifth of a ResNet-18 training step at 64 px.
  """
  n, h, w, c = x.shape
  ho, wo = -(-h // 2), -(-w // 2)
  ph, pw = same_padding(h, 3, 2), same_padding(w, 3, 2)
  xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=-jnp.inf)
  out = None
  for i in range(3):
    for j in range(3):
      view = lax.slice(xp, (0, i, j, 0), (n, i + 2 * ho - 1, j + 2 * wo - 1, c), (1, 2, 2, 1))
      out = view if out is None else jnp.maximum(out, view)
  return out


class Conv(nn.Module):
  """A bias-free 'SAME' convolution whose lowering is a choice, not a parameter.

  Its only parameter, `kernel` [kh, kw, Cin, Cout], has the name, shape and initialiser of
  `nn.Conv(use_bias=False)`, so checkpoints move freely between lowerings.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  conv_impl: str = "xla"
  matmul_max_pixels: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    out_pixels = -(-x.shape[-3] // self.strides[0]) * -(-x.shape[-2] // self.strides[1])
    if self.conv_impl == "matmul" and (self.matmul_max_pixels <= 0
                                       or out_pixels <= self.matmul_max_pixels):
      return conv_as_matmul(x, kernel, self.strides)
    return lax.conv_general_dilated(x, kernel, self.strides, "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


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
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return nn.relu(residual + y)


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
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """A ResNet trunk with global average pooling: [N, S, S, C] -> [N, D].

  Attributes:
    depth: 18, 34 or 50 (10 for tests).
    width: multiplier on the channel counts (64, 128, 256, 512 at width 1).
    stem: `imagenet` (7x7/2 conv, 3x3/2 max pool), `small` (3x3/1 conv, for 48-64 px inputs)
      or `small_strided` (3x3/2 conv).
    conv_impl, matmul_max_pixels: see `Conv`.
    bn_axis_name: axis name(s) over which BatchNorm averages its batch statistics, e.g. the
      vmapped branch axis, or that plus the data-parallel axis for synchronised BatchNorm.
    bn_momentum: the running-average decay of BatchNorm.
    dtype: compute dtype (bfloat16 keeps float32 parameters and BatchNorm statistics).
  """
  depth: int = 50
  width: float = 1.0
  stem: str = "imagenet"
  conv_impl: str = "xla"
  matmul_max_pixels: int = 0
  bn_axis_name: Any = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.depth not in STAGE_SIZES:
      raise ValueError(f"ResNet depth must be one of {sorted(STAGE_SIZES)}, got {self.depth}")
    if self.stem not in STEMS:
      raise ValueError(f"ResNet stem must be one of {STEMS}, got {self.stem!r}")
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}")
    conv = functools.partial(Conv, conv_impl=self.conv_impl,
                             matmul_max_pixels=self.matmul_max_pixels, dtype=self.dtype)
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
      x = max_pool_3x3_s2(x)
    for i, num_blocks in enumerate(STAGE_SIZES[self.depth]):
      for j in range(num_blocks):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = block(width(64 * 2**i), conv=conv, norm=norm, strides=strides)(x)
    return jnp.mean(x, axis=(-3, -2)).astype(jnp.float32)


def feature_dim(depth: int, width: float) -> int:
  """The length D of the pooled feature vector of `ResNet(depth, width)`."""
  last = max(int(round(512 * width)), 1)
  return last * 4 if depth >= 50 else last
