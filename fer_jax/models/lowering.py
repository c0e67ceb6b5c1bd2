"""How the backbone's convolutions and max pool lower to XLA, chosen per layer for speed.

Every lowering computes the same function (up to float rounding) from the same parameters:

- `xla`: `lax.conv_general_dilated` and its autodiff; best on GPU and TPU. On CPU, XLA runs
  3x3 convolutions over maps of 4 pixels or fewer at about 2 GFLOP/s, and its weight gradients
  at several times the forward cost.
- `matmul`: im2col (the kh*kw shifted views of the padded input, concatenated on the channel
  axis) and one GEMM, differentiated by autodiff (the backward pass is a GEMM and a col2im).
- `hybrid`: the im2col GEMM forward, whose columns are kept for the weight gradient (one GEMM),
  and XLA's own transposed convolution for the input gradient, which XLA:CPU runs well; the
  col2im pass of `matmul` disappears.
- `shifted`: for stride-1 convolutions, columns of the kw horizontal shifts only (kw*Cin wide,
  a third of im2col's for 3x3) and one GEMM against all kh kernel rows at once (kh*Cout
  outputs per pixel of the vertically padded map); the output sums the kh row-shifted slices
  of that product. Autodiff's backward is two GEMMs and shifted sums of the same widths, so
  no kh*kw-wide array is built in either direction. Strided and 1x1 convolutions use
  `matmul`.

The max pool (3x3, stride 2, 'SAME') is the maximum of nine strided views; its gradient,
written by hand, routes each output's gradient to its first maximal input on four quarter-size
grids, instead of the select-and-scatter that costs XLA:CPU a fifth of a ResNet-18 step.

The choice is the config's `lowering` section, resolved per platform here (`conv_module`,
`pool_for`, `branch_axis_for`): the backbones take a convolution module and a pool function
and never name a lowering; the five-branch model (`models/branch_attention.py`) implements both
branch layouts (`vmap`, `fold`) and is told which by `branch_axis_for`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow/Flax 'SAME' padding (low, high) along one spatial axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def im2col(x: jax.Array, kh: int, kw: int, strides: Sequence[int]) -> jax.Array:
  """[N, H, W, C] -> [N, Ho, Wo, kh*kw*C]: the 'SAME'-padded patches, (i, j, c) order."""
  n, h, w, c = x.shape
  sh, sw = strides
  ho, wo = -(-h // sh), -(-w // sw)
  if kh == kw == 1:
    return x[:, ::sh, ::sw, :]
  xp = jnp.pad(x, ((0, 0), same_padding(h, kh, sh), same_padding(w, kw, sw), (0, 0)))
  views = [lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                     (1, sh, sw, 1))
           for i in range(kh) for j in range(kw)]
  return jnp.concatenate(views, axis=-1)


def conv_xla(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
  return lax.conv_general_dilated(x, kernel, tuple(strides), "SAME", dimension_numbers=_DN)


def conv_as_matmul(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
  """A 'SAME'-padded NHWC convolution as im2col and one GEMM (autodiff backward).

  Args:
    x: [N, H, W, Cin].
    kernel: [kh, kw, Cin, Cout] (Flax's HWIO layout).
    strides: (sh, sw).

  Returns:
    [N, Ho, Wo, Cout], equal to `conv_xla(x, kernel, strides)`.
  """
  kh, kw, cin, cout = kernel.shape
  cols = im2col(x, kh, kw, strides)
  n, ho, wo, k = cols.shape
  out = jnp.dot(cols.reshape(n * ho * wo, k), kernel.reshape(kh * kw * cin, cout))
  return out.reshape(n, ho, wo, cout)


def conv_shifted(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
  """A stride-1 'SAME' NHWC convolution as kw-wide columns and one GEMM over all kernel rows.

  With xp the input padded to [N, H + kh - 1, W + kw - 1, Cin], the columns
  cols[n, r, w] = (xp[n, r, w + j, :] for j < kw) are multiplied by the kernel laid out as
  [kw*Cin, kh*Cout], giving z[n, r, w, i, :] = sum_j xp[n, r, w + j] @ kernel[i, j]; then
  out[n, h, w] = sum_i z[n, h + i, w, i]. Strided and 1x1 convolutions go to `conv_as_matmul`,
  whose arguments and result this shares.
  """
  kh, kw, cin, cout = kernel.shape
  if tuple(strides) != (1, 1) or kh * kw == 1:
    return conv_as_matmul(x, kernel, strides)
  n, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), same_padding(h, kh, 1), same_padding(w, kw, 1), (0, 0)))
  hp = h + kh - 1
  cols = jnp.concatenate([xp[:, :, j:j + w, :] for j in range(kw)], axis=-1)
  rows_kernel = kernel.transpose(1, 2, 0, 3).reshape(kw * cin, kh * cout)
  z = jnp.dot(cols.reshape(n * hp * w, kw * cin), rows_kernel).reshape(n, hp, w, kh, cout)
  out = z[:, 0:h, :, 0, :]
  for i in range(1, kh):
    out = out + z[:, i:i + h, :, i, :]
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_hybrid(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
  """`conv_as_matmul` forward; input gradient by XLA, weight gradient by one GEMM."""
  return conv_as_matmul(x, kernel, strides)


def _hybrid_fwd(x, kernel, strides):
  kh, kw, cin, cout = kernel.shape
  cols = im2col(x, kh, kw, strides)
  n, ho, wo, k = cols.shape
  cols = cols.reshape(n * ho * wo, k)
  out = jnp.dot(cols, kernel.reshape(k, cout)).reshape(n, ho, wo, cout)
  return out, (x, kernel, cols)


def _hybrid_bwd(strides, residuals, dy):
  x, kernel, cols = residuals
  cout = kernel.shape[-1]
  dk = jnp.dot(cols.T, dy.reshape(-1, cout)).reshape(kernel.shape)
  _, input_vjp = jax.vjp(lambda x_: conv_xla(x_, kernel, strides), x)
  (dx,) = input_vjp(dy)
  return dx, dk


conv_hybrid.defvjp(_hybrid_fwd, _hybrid_bwd)


_CONVS = {"xla": conv_xla, "matmul": conv_as_matmul, "hybrid": conv_hybrid,
          "shifted": conv_shifted}
CONV_IMPLS = tuple(_CONVS)


def conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], impl: str) -> jax.Array:
  """The 'SAME' convolution under lowering `impl` (one of `CONV_IMPLS`)."""
  if impl not in _CONVS:
    raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
  return _CONVS[impl](x, kernel, tuple(int(s) for s in strides))


# --------------------------------------------------------------------------------------------
# Max pooling.

def _pool_views(x: jax.Array) -> tuple[list[jax.Array], tuple[int, int], tuple, tuple]:
  n, h, w, c = x.shape
  ho, wo = -(-h // 2), -(-w // 2)
  ph, pw = same_padding(h, 3, 2), same_padding(w, 3, 2)
  xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=-jnp.inf)
  views = [lax.slice(xp, (0, i, j, 0), (n, i + 2 * ho - 1, j + 2 * wo - 1, c), (1, 2, 2, 1))
           for i in range(3) for j in range(3)]
  return views, (ho, wo), ph, pw


@jax.custom_vjp
def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  """3x3/2 'SAME' max pooling, equal to `nn.max_pool(x, (3, 3), (2, 2), 'SAME')`."""
  views, _, _, _ = _pool_views(x)
  out = views[0]
  for v in views[1:]:
    out = jnp.maximum(out, v)
  return out


def _pool_fwd(x):
  views, _, _, _ = _pool_views(x)
  out, arg = views[0], jnp.zeros(views[0].shape, jnp.int8)
  for k, v in enumerate(views[1:], 1):
    better = v > out  # strict: the first maximal view wins, as in select-and-scatter
    out = jnp.where(better, v, out)
    arg = jnp.where(better, jnp.int8(k), arg)
  return out, (arg, x.shape)


def _pool_bwd(residuals, g):
  arg, shape = residuals
  n, h, w, c = shape
  ho, wo = g.shape[1:3]
  ph, pw = same_padding(h, 3, 2), same_padding(w, 3, 2)
  pick = lambda i, j: jnp.where(arg == 3 * i + j, g, jnp.zeros_like(g))
  pad = lambda a, top, left, rows, cols: jnp.pad(
      a, ((0, 0), (top, rows - a.shape[1] - top), (left, cols - a.shape[2] - left), (0, 0)))
  # Padded row 2m + i receives output row m (i = 0, 1) or m - 1 (i = 2); columns likewise.
  # Four parity grids of the padded input, each (ho + 1) x (wo + 1):
  even_even = (pad(pick(0, 0), 0, 0, ho + 1, wo + 1) + pad(pick(2, 0), 1, 0, ho + 1, wo + 1) +
               pad(pick(0, 2), 0, 1, ho + 1, wo + 1) + pad(pick(2, 2), 1, 1, ho + 1, wo + 1))
  even_odd = pad(pick(0, 1), 0, 0, ho + 1, wo + 1) + pad(pick(2, 1), 1, 0, ho + 1, wo + 1)
  odd_even = pad(pick(1, 0), 0, 0, ho + 1, wo + 1) + pad(pick(1, 2), 0, 1, ho + 1, wo + 1)
  odd_odd = pad(pick(1, 1), 0, 0, ho + 1, wo + 1)
  rows_even = jnp.stack([even_even, even_odd], axis=3)  # [n, ho+1, wo+1, 2, c]
  rows_odd = jnp.stack([odd_even, odd_odd], axis=3)
  grid = jnp.stack([rows_even, rows_odd], axis=2)  # [n, ho+1, 2, wo+1, 2, c]
  padded = grid.reshape(n, 2 * ho + 2, 2 * wo + 2, c)
  return (padded[:, ph[0]:ph[0] + h, pw[0]:pw[0] + w, :].astype(g.dtype),)


max_pool_3x3_s2.defvjp(_pool_fwd, _pool_bwd)


# --------------------------------------------------------------------------------------------
# The convolution module and the per-platform choice.

class Conv(nn.Module):
  """A bias-free 'SAME' convolution whose lowering is a choice, not a parameter.

  Its only parameter, `kernel` [kh, kw, Cin, Cout], has the name, shape and initialiser of
  `nn.Conv(use_bias=False)`, so checkpoints move freely between lowerings and `nn.Conv`.
  Convolutions whose output map has at most `small_map_pixels` pixels use `small_conv_impl`,
  the others `conv_impl`.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  conv_impl: str = "xla"
  small_conv_impl: str = "matmul"
  small_map_pixels: int = 0
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
    small = out_pixels <= self.small_map_pixels
    return conv(x, kernel, self.strides, self.small_conv_impl if small else self.conv_impl)


CPU_CONV_IMPL = "matmul"  # the measured best on CPU (bench/RESULTS.md, bench/conv_lowering.py)
BRANCH_AXES = ("auto", "vmap", "fold")


def conv_impl_for(lowering_cfg: Mapping, platform: str) -> str:
  """Resolves `lowering.conv_impl = 'auto'`: the measured best on CPU, XLA elsewhere."""
  impl = lowering_cfg["conv_impl"]
  if impl == "auto":
    return CPU_CONV_IMPL if platform == "cpu" else "xla"
  for name in (impl, lowering_cfg["small_conv_impl"]):
    if name not in CONV_IMPLS:
      raise ValueError(f"config.lowering conv_impl and small_conv_impl must be auto or one of "
                       f"{CONV_IMPLS}, got {name!r}")
  return impl


def branch_axis_for(lowering_cfg: Mapping, platform: str) -> str:
  """Resolves `lowering.branch_axis = 'auto'`: `fold` on CPU (measured faster there: XLA:CPU
  transposes every activation in BatchNorm's backward under the vmapped branch axis), `vmap`
  elsewhere. Both compute the same function with the same parameters."""
  axis = lowering_cfg["branch_axis"]
  if axis not in BRANCH_AXES:
    raise ValueError(f"config.lowering.branch_axis must be one of {BRANCH_AXES}, got {axis!r}")
  if axis == "auto":
    return "fold" if platform == "cpu" else "vmap"
  return axis


def conv_module(lowering_cfg: Mapping, platform: str) -> Callable[..., nn.Module]:
  """The convolution module for the backbones: `Conv` under the configured lowering (with the
  small-map rule on CPU only), `partial`-ed like flax's `nn.Conv`."""
  return functools.partial(
      Conv, conv_impl=conv_impl_for(lowering_cfg, platform),
      small_conv_impl=lowering_cfg["small_conv_impl"],
      small_map_pixels=lowering_cfg["small_map_pixels"] if platform == "cpu" else 0)


def pool_for(lowering_cfg: Mapping, platform: str) -> Callable[[jax.Array], jax.Array]:
  """The 3x3 stride-2 'SAME' max pool: the strided-view form (`max_pool_3x3_s2`, equal to
  `nn.max_pool`'s values and gradients) everywhere but under `xla` convolutions off CPU."""
  if conv_impl_for(lowering_cfg, platform) == "xla" and platform != "cpu":
    # window_shape by keyword: the stand-in that jax2onnx (--mode=export) puts in place of
    # nn.max_pool while it traces takes it no other way.
    return lambda x: nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="SAME")
  return max_pool_3x3_s2
