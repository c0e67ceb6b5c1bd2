"""config.model.part_size: the landmark-region branches run the shared backbone on smaller crops
resized inside the model; the whole-face branches keep the input's size."""

import functools

import jax
import numpy as np
import optax
import pytest

from configs import cpu
from fer_jax.models import branch_attention, resnet
from fer_jax import state as state_lib

BACKBONE = functools.partial(resnet.ResNet, depth=10, width=0.125, stem="small_strided")
KW = dict(backbone=BACKBONE, attention_hidden=8)
PARTS = (1, 2, 3)  # eyes, nose, mouth of the default five branches


@pytest.fixture(scope="module")
def inputs():
  return jax.random.normal(jax.random.key(0), (4, 5, 24, 24, 1))


def init(model, x):
  return jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(1))


def test_part_size_zero_is_the_current_model(inputs):
  """0 (off), and a size >= S (a smaller progressive-resizing size), trace the very program of
  the model without the option, in evaluation and in training."""
  plain = branch_attention.BranchAttentionNet(**KW)
  variables = jax.eval_shape(lambda k: plain.init(k, inputs, train=False), jax.random.key(1))
  program = lambda m, train: str(jax.make_jaxpr(
      lambda v, x: m.apply(v, x, train=train, mutable=["batch_stats"] if train else False))(
          variables, inputs))
  for train in (False, True):
    ref = program(plain, train)
    for size in (0, 24):
      assert program(branch_attention.BranchAttentionNet(
          part_size=size, part_branches=PARTS, **KW), train) == ref


def test_parts_see_resized_crops_and_faces_full_ones(inputs):
  models = {axis: branch_attention.BranchAttentionNet(part_size=16, part_branches=PARTS,
                                                      branch_axis=axis, **KW)
            for axis in branch_attention.BRANCH_AXES}
  variables = init(models["fold"], inputs)
  assert jax.tree.structure(variables) == jax.tree.structure(jax.eval_shape(
      lambda k: branch_attention.BranchAttentionNet(**KW).init(k, inputs, train=False),
      jax.random.key(1)))  # one backbone, as without the option
  bb = {"params": variables["params"]["backbone"],
        "batch_stats": variables["batch_stats"]["backbone"]}
  small = jax.image.resize(inputs, (4, 5, 16, 16, 1), method="linear", antialias=True)
  by_hand = jax.jit(lambda x: BACKBONE().apply(bb, x.reshape((-1,) + x.shape[2:]),
                                                train=False).reshape(4, 5, -1))
  full, resized = by_hand(inputs), by_hand(small)
  want = np.asarray(full).copy()
  want[:, list(PARTS)] = np.asarray(resized)[:, list(PARTS)]
  for axis, model in models.items():
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, inputs)
    assert out["features"].shape == (4, 5, resnet.feature_dim(10, 0.125)), axis
    np.testing.assert_allclose(out["features"], want, rtol=1e-5, atol=1e-5, err_msg=axis)


def test_resize_is_jax_image_resize_as_a_constant_matrix():
  """The in-model resize (a constant matrix per axis, exportable with a symbolic batch) equals
  jax.image.resize's linear antialiased one, shrinking by whole and by odd factors."""
  x = np.random.default_rng(0).normal(size=(3, 2, 32, 32, 1)).astype(np.float32)
  for size in (16, 20, 12, 31):
    np.testing.assert_allclose(
        branch_attention.resize(x, size),
        jax.image.resize(x, (3, 2, size, size, 1), method="linear", antialias=True),
        atol=2e-5, err_msg=str(size))
  # By 2: output j samples input position 2j + 0.5 with a triangle of half-width 2, so an inner
  # output weighs its four nearest inputs 1/8, 3/8, 3/8, 1/8; at the border the three inputs
  # inside weigh 0.75, 0.75, 0.25, renormalised by 1.75.
  w = branch_attention.resize_matrix(32, 16)
  np.testing.assert_allclose(w[:6, 1], [0, 0.125, 0.375, 0.375, 0.125, 0], atol=1e-7)
  np.testing.assert_allclose(w[:4, 0], [0.75 / 1.75, 0.75 / 1.75, 0.25 / 1.75, 0], atol=1e-7)
  np.testing.assert_allclose(w.sum(axis=0), 1, rtol=1e-6)


def test_bad_part_size_is_named():
  config = cpu.get_config()  # 32 px crops, ResNet-10
  config.model.part_size = 20
  assert state_lib.part_branches(config) == (20, PARTS)
  for bad in (-1, 32, 48):
    config.model.part_size = bad
    with pytest.raises(ValueError, match=rf"config\.model\.part_size.*got {bad}"):
      state_lib.build_model(config, platform="cpu")
  config.model.part_size, config.model.backbone = 20, "vgg13"  # flattens: size-dependent D
  with pytest.raises(ValueError, match="config.model.part_size=20"):
    state_lib.build_model(config, platform="cpu")


def test_train_step_runs_with_part_size_fold_and_vmap():
  config = cpu.get_config()
  config.data.crops.size, config.model.part_size = 16, 8
  config.model.width, config.model.attention_hidden = 0.125, 8
  config.lowering.conv_impl = "xla"  # the quickest to build; lowerings change no number
  tx = optax.sgd(0.05, momentum=0.9)
  # numpy inputs and checks: every eager jnp op would be a compilation of its own
  x = np.random.default_rng(1).normal(size=state_lib.input_shape(config, 4)).astype(np.float32)
  labels = np.arange(4)
  st0 = None
  for axis in branch_attention.BRANCH_AXES:
    config.lowering.branch_axis = axis
    model = state_lib.build_model(config, platform="cpu")
    assert (model.part_size, model.part_branches, model.branch_axis) == (8, PARTS, axis)
    if st0 is None:  # both paths have the same variables
      st0 = jax.jit(lambda k, m=model: state_lib.create_train_state(config, m, tx, k))(
          jax.random.key(0))

    @jax.jit
    def step(st, model=model):
      def loss_fn(params):
        out, new = model.apply({"params": params, "batch_stats": st.batch_stats}, x,
                               train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(out["logits"], labels).mean()
        return loss - out["mu"].mean(), (loss, new["batch_stats"])  # mu: a gradient to the gate
      grads, (loss, stats) = jax.grad(loss_fn, has_aux=True)(st.params)
      updates, opt_state = tx.update(grads, st.opt_state, st.params)
      return st.replace(params=optax.apply_updates(st.params, updates), batch_stats=stats,
                        opt_state=opt_state), loss, grads

    st, loss, grads = step(st0)
    assert np.isfinite(float(loss)), axis
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads)), axis
    assert not np.allclose(jax.tree.leaves(st.batch_stats)[0],
                           jax.tree.leaves(st0.batch_stats)[0]), axis  # running averages moved
