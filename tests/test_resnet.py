"""The fast CPU lowerings change no result: im2col convolutions and the strided-view max pool
against XLA's convolution and reduce_window, outputs and gradients."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

from fer_jax.models import lowering, resnet


def xla_conv(x, k, strides):
  return lax.conv_general_dilated(x, k, strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("hw,kernel,stride,cin,cout", [
    ((7, 7), 3, 1, 3, 4), ((8, 8), 3, 2, 2, 5), ((5, 5), 3, 2, 4, 4), ((2, 2), 3, 1, 8, 8),
    ((1, 1), 3, 1, 4, 4), ((12, 12), 7, 2, 1, 6), ((9, 9), 1, 2, 3, 5), ((6, 6), 1, 1, 3, 2),
    # Non-square maps: each lowering must keep rows and columns apart (shifted's row sums).
    ((5, 9), 3, 1, 4, 6), ((6, 11), 3, 2, 3, 4)])
def test_conv_lowerings_equal_xla(hw, kernel, stride, cin, cout):
  x = jax.random.normal(jax.random.key(0), (2, *hw, cin))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, cin, cout))
  s = (stride, stride)
  g = lambda f: jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.sin(f(x, k, s))),
                                           argnums=(0, 1)))(x, k)
  want_out = xla_conv(x, k, s)
  want_value, want_grads = g(xla_conv)
  for impl in [i for i in lowering.CONV_IMPLS if i != "xla"]:
    conv = lambda x, k, s: lowering.conv(x, k, s, impl)
    np.testing.assert_allclose(conv(x, k, s), want_out, rtol=1e-5, atol=1e-4)
    value, grads = g(conv)
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-4)
    for a, b in zip(grads, want_grads):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [8, 7, 3])
def test_max_pool_equals_reduce_window(size):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  np.testing.assert_array_equal(jax.jit(lowering.max_pool_3x3_s2)(x),
                                nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME"))
  ga = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(lowering.max_pool_3x3_s2(x)))))(x)
  gb = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(nn.max_pool(x, (3, 3), (2, 2), "SAME")))))(x)
  np.testing.assert_allclose(ga, gb, rtol=1e-6, atol=1e-6)
  # After a ReLU many inputs tie at zero: the gradient still goes where XLA's goes.
  r = jax.nn.relu(x - 0.5)
  w = jax.random.normal(jax.random.key(1), lowering.max_pool_3x3_s2(r).shape)
  ga = jax.jit(jax.grad(lambda r: jnp.sum(w * lowering.max_pool_3x3_s2(r))))(r)
  gb = jax.jit(jax.grad(lambda r: jnp.sum(w * nn.max_pool(r, (3, 3), (2, 2), "SAME"))))(r)
  np.testing.assert_allclose(ga, gb, rtol=1e-6, atol=1e-6)


# Every lowering over basic blocks; over bottleneck blocks (ResNet-50's, one block a stage, which
# has every kind of convolution of the full depth) the one that uses every lowering path
# (`shifted`: its own for 3x3 stride 1, im2col matmuls for 1x1 and strided ones).
@pytest.mark.parametrize("depth,stem,size,impls", [
    (10, "imagenet", 48, tuple(i for i in lowering.CONV_IMPLS if i != "xla") + ("small",)),
    (50, "small_strided", 24, ("shifted",))])
def test_backbone_lowerings_agree(depth, stem, size, impls, monkeypatch):
  """`small`: XLA's convolutions, but im2col matmuls where the output map is tiny."""
  monkeypatch.setitem(resnet.STAGE_SIZES, 50, (1, 1, 1, 1))  # a quarter of the compile time
  x = jax.random.normal(jax.random.key(0), (3, size, size, 1))
  make = lambda impl, pixels=0: resnet.ResNet(
      depth=depth, width=0.125, stem=stem, pool=lowering.max_pool_3x3_s2,
      conv=functools.partial(lowering.Conv, conv_impl=impl, small_conv_impl="matmul",
                             small_map_pixels=pixels))
  variables = jax.jit(lambda k: make("xla").init(k, x, train=False))(jax.random.key(1))

  def grads(model):
    def loss(params):
      out, _ = model.apply({**variables, "params": params}, x, train=True,
                           mutable=["batch_stats"])
      return jnp.sum(out ** 2), out
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  (la, fa), ga = grads(make("xla"))
  for model in [make("xla", 4) if i == "small" else make(i) for i in impls]:
    (lb, fb), gb = grads(model)
    np.testing.assert_allclose(fb, fa, rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):  # float32 rounding, BN-amplified
      np.testing.assert_allclose(b, a, rtol=1e-2, atol=1e-3 * float(np.abs(a).max()))


def test_same_parameters_under_every_lowering():
  x = jnp.zeros((1, 24, 24, 1))
  shapes = lambda conv: jax.tree.map(jnp.shape, jax.eval_shape(
      resnet.ResNet(depth=10, width=0.25, conv=conv).init, jax.random.key(0), x)["params"])
  for impl in lowering.CONV_IMPLS:  # and flax's own nn.Conv, the research model's default
    assert shapes(functools.partial(lowering.Conv, conv_impl=impl)) == shapes(resnet.PlainConv)


def test_lowering_is_resolved_per_platform_from_its_config_section():
  low = dict(conv_impl="auto", small_conv_impl="matmul", small_map_pixels=4, branch_axis="auto")
  assert lowering.conv_impl_for(low, "cpu") == lowering.CPU_CONV_IMPL
  assert lowering.conv_impl_for(low, "gpu") == "xla"
  assert lowering.branch_axis_for(low, "cpu") == "fold"
  assert lowering.branch_axis_for(low, "tpu") == "vmap"
  assert lowering.conv_module(low, "gpu").keywords["small_map_pixels"] == 0  # CPU-only rule
  assert lowering.conv_module(low, "cpu").keywords["small_map_pixels"] == 4
  with pytest.raises(ValueError, match="'im2row'"):
    lowering.conv_impl_for(dict(low, conv_impl="im2row"), "cpu")
  with pytest.raises(ValueError, match="branch_axis"):
    lowering.branch_axis_for(dict(low, branch_axis="scan"), "cpu")
