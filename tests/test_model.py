"""BranchAttentionNet: one backbone's parameters, weights in (0, 1), fusion by hand, vmap = fold."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.models import backbones, branch_attention, resnet, vgg

BACKBONE = functools.partial(resnet.ResNet, depth=10, width=0.125, stem="small_strided")
KW = dict(backbone=BACKBONE, attention_hidden=8)


@pytest.fixture(scope="module")
def inputs():
  return jax.random.normal(jax.random.key(0), (4, 5, 24, 24, 1))


def n_params(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


def init(model, x):
  return jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(1))


def apply(model, variables, x, train):
  fn = lambda v, x: model.apply(v, x, train=train, mutable=["batch_stats"] if train else False)
  return jax.jit(fn)(variables, x)


def test_parameter_count_is_one_backbone(inputs):
  model = branch_attention.BranchAttentionNet(**KW)
  variables = jax.eval_shape(lambda k: model.init(k, inputs, train=False), jax.random.key(1))
  one = jax.eval_shape(lambda k: resnet.ResNet(depth=10, width=0.125, stem="small_strided").init(
      k, inputs[:, 0], train=False), jax.random.key(1))
  assert n_params(variables["params"]["backbone"]) == n_params(one["params"])
  d = resnet.feature_dim(10, 0.125)
  head = (d * 8 + 8) + (8 * 1 + 1) + (d * 8 + 8)  # W1, W2, classifier (with biases)
  assert n_params(variables["params"]) == n_params(one["params"]) + head


def test_mu_in_open_unit_interval_and_shapes(inputs):
  model = branch_attention.BranchAttentionNet(**KW)
  variables = init(model, inputs)
  out, _ = apply(model, variables, inputs * 10, True)
  assert out["logits"].shape == (4, 8) and out["mu"].shape == (4, 5)
  assert out["features"].shape == (4, 5, resnet.feature_dim(10, 0.125))
  assert bool(jnp.all((out["mu"] > 0) & (out["mu"] < 1)))


def test_fusion_hand_computed():
  mu = jnp.array([[0.5, 0.25]])
  features = jnp.array([[[1.0, 2.0], [4.0, 8.0]]])
  np.testing.assert_allclose(branch_attention.fuse(mu, features, "weighted_sum"), [[1.5, 3.0]])
  np.testing.assert_allclose(branch_attention.fuse(mu, features, "weighted_mean"), [[2.0, 4.0]])


@pytest.mark.parametrize("fusion", branch_attention.FUSIONS)
def test_model_output_is_the_fusion_of_its_features(inputs, fusion):
  model = branch_attention.BranchAttentionNet(fusion=fusion, **KW)
  variables = init(model, inputs)
  # A non-zero classifier, so that the logits depend on the fusion.
  params = jax.tree.map(lambda x: x, variables["params"])
  params["classifier"]["kernel"] = jax.random.normal(jax.random.key(2),
                                                     params["classifier"]["kernel"].shape)
  out = apply(model, {**variables, "params": params}, inputs, False)
  mu, f = np.asarray(out["mu"]), np.asarray(out["features"])
  fused = (mu[..., None] * f).sum(1)
  if fusion == "weighted_mean":
    fused = fused / mu.sum(1, keepdims=True)
  if fusion == "none":  # no gate: mu is 1 and the fusion the plain mean
    np.testing.assert_array_equal(mu, np.ones((4, 5)))
    fused = f.mean(1)
  np.testing.assert_allclose(out["fused"], fused, rtol=1e-5, atol=1e-6)
  logits = fused @ np.asarray(params["classifier"]["kernel"]) + np.asarray(params["classifier"]["bias"])
  np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-5)


def test_vmap_and_fold_compute_the_same_function(inputs):
  vm = branch_attention.BranchAttentionNet(branch_axis="vmap", **KW)
  fo = branch_attention.BranchAttentionNet(branch_axis="fold", **KW)
  variables = init(vm, inputs)
  assert jax.tree.structure(variables) == jax.tree.structure(
      jax.eval_shape(lambda k: fo.init(k, inputs, train=False), jax.random.key(1)))
  a, sa = apply(vm, variables, inputs, True)
  b, sb = apply(fo, variables, inputs, True)
  np.testing.assert_allclose(a["features"], b["features"], rtol=1e-5, atol=1e-5)
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_branch_count_comes_from_the_input():
  model = branch_attention.BranchAttentionNet(**KW)
  x = jnp.zeros((2, 3, 24, 24, 1))
  variables = jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(1))
  assert jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)["mu"].shape == (2, 3)


def test_bad_configuration_is_named():
  with pytest.raises(ValueError, match="depth"):
    jax.eval_shape(resnet.ResNet(depth=20).init, jax.random.key(0), jnp.zeros((1, 24, 24, 1)))
  with pytest.raises(ValueError, match="fusion"):
    branch_attention.fuse(jnp.ones((1, 2)), jnp.ones((1, 2, 3)), "max")


def test_fusion_none_with_one_branch_is_the_plain_resnet_baseline():
  """Backbone, pooled features, linear classifier: no attention parameters at all."""
  x = jax.random.normal(jax.random.key(3), (4, 1, 24, 24, 1))
  model = branch_attention.BranchAttentionNet(fusion="none", **KW)
  variables = init(model, x)
  assert set(variables["params"]) == {"backbone", "classifier"}
  params = jax.tree.map(lambda p: p, variables["params"])
  params["classifier"]["kernel"] = jax.random.normal(jax.random.key(2),
                                                     params["classifier"]["kernel"].shape)
  out = apply(model, {**variables, "params": params}, x, False)
  plain = BACKBONE().apply({"params": params["backbone"],
                            "batch_stats": variables["batch_stats"]["backbone"]}, x[:, 0],
                           train=False)
  logits = plain @ params["classifier"]["kernel"] + params["classifier"]["bias"]
  np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-5)


def test_vgg13_backbone_through_the_registry():
  """The FERPlus paper's VGG13 as a backbone: ten 3x3 convolutions in four pooled groups and
  two dense layers of 1024 x width; its dropout draws from the `dropout` stream in training."""
  cfg = dict(backbone="vgg13", width=0.125, bn_momentum=0.9, depth=10, stem="small")
  make = backbones.backbone(cfg, conv=resnet.PlainConv, pool=None, dtype=jnp.float32)
  model = branch_attention.BranchAttentionNet(backbone=make, attention_hidden=8)
  x = jax.random.normal(jax.random.key(0), (2, 5, 32, 32, 1))
  variables = init(model, x)
  kernels = [k for k in jax.tree.leaves_with_path(variables["params"]["backbone"])
             if "Conv" in jax.tree_util.keystr(k[0]) and k[1].ndim == 4]
  assert [k[1].shape[-1] for k in kernels] == [8, 8, 16, 16, 32, 32, 32, 32, 32, 32]
  dense = variables["params"]["backbone"]["Dense_0"]["kernel"]
  assert dense.shape == (2 * 2 * 32, 128)  # 32 px after four 2x2 pools: 2x2x32
  assert backbones.feature_dim(cfg) == vgg.feature_dim(0.125) == 128
  run = lambda key: model.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": key})[0]["features"]
  a, b = run(jax.random.key(1)), run(jax.random.key(2))
  assert a.shape == (2, 5, 128) and float(jnp.abs(a - b).max()) > 0  # dropout in training
  e1 = model.apply(variables, x, train=False)["features"]
  np.testing.assert_array_equal(e1, model.apply(variables, x, train=False)["features"])
  with pytest.raises(ValueError, match="'vgg16'"):
    backbones.backbone(dict(cfg, backbone="vgg16"), conv=None, pool=None, dtype=jnp.float32)


def test_multi_view_heads_and_inference_on_the_face_alone(inputs):
  """Multi-view training: a classifier per branch on its own feature; evaluated on `face`
  alone, the prediction is that branch's classifier on the backbone's face feature, whatever
  the other branches hold."""
  model = branch_attention.BranchAttentionNet(**KW, aux_heads=True)
  variables = init(model, inputs)
  assert {f"aux_{i}" for i in range(5)} <= set(variables["params"])
  # Non-zero heads (they start at zero, as the classifier does), so the test can fail.
  params = jax.tree.map(lambda p: p, variables["params"])
  for i in range(5):
    kernel = params[f"aux_{i}"]["kernel"]
    params[f"aux_{i}"]["kernel"] = jax.random.normal(jax.random.key(10 + i), kernel.shape)
  variables = {**variables, "params": params}
  out = apply(model, variables, inputs, train=False)
  assert out["aux_logits"].shape == (4, 5, 8)
  head = lambda i, f: f @ params[f"aux_{i}"]["kernel"] + params[f"aux_{i}"]["bias"]
  for i in range(5):
    np.testing.assert_allclose(out["aux_logits"][:, i], head(i, out["features"][:, i]),
                               rtol=1e-5, atol=1e-5)
  face_only = branch_attention.BranchAttentionNet(**KW, aux_heads=True, inference_branches=(0,))
  alone = apply(face_only, variables, inputs, train=False)
  np.testing.assert_allclose(alone["logits"], out["aux_logits"][:, 0], rtol=1e-5, atol=1e-5)
  assert alone["mu"].tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]] * 4
  other = inputs.at[:, 1:].set(0.0)  # the other branches do not enter the prediction
  np.testing.assert_array_equal(apply(face_only, variables, other, train=False)["logits"],
                                alone["logits"])
  with pytest.raises(ValueError, match="need aux_heads"):
    init(branch_attention.BranchAttentionNet(**KW, inference_branches=(0,)), inputs)
