"""Mixup and CutMix (`data.mix`): each example mixed with its batch neighbour by a weight drawn
from its own index, the targets by the share of each face shown; wired into the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.data import mixing, pipeline
from fer_jax import errors, parallel, state as state_lib, validation
from fer_jax.modes import train


def batch(b=6, nb=2, size=8, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.uniform(size=(b, nb, size, size, 3)), jnp.float32)
  targets = jnp.asarray(rng.dirichlet(np.ones(8), size=b), jnp.float32)
  return x, targets, jnp.arange(100, 100 + b)


def test_mixup_weight_belongs_to_the_example_not_its_place_in_the_batch():
  x, targets, index = batch()
  mixed, mixed_t = mixing.mixup(x, targets, index, seed=3, alpha=0.4)
  lam = np.asarray(mixing.mix_weights(3, index, 0.4))
  assert ((lam > 0) & (lam < 1)).all() and len(set(lam.round(6))) == len(lam)
  for i in range(len(lam)):  # a convex mix of itself and the previous example
    np.testing.assert_allclose(mixed[i], lam[i] * x[i] + (1 - lam[i]) * x[i - 1], atol=1e-6)
    np.testing.assert_allclose(mixed_t[i], lam[i] * targets[i] + (1 - lam[i]) * targets[i - 1],
                               atol=1e-6)
  np.testing.assert_allclose(mixed_t.sum(-1), 1.0, atol=1e-6)
  # Reordered, each example keeps its weight (drawn from its index); only the partner changes.
  order = np.array([3, 0, 5, 1, 4, 2])
  lam2 = np.asarray(mixing.mix_weights(3, index[order], 0.4))
  np.testing.assert_array_equal(lam2, lam[order])
  # Beta(0.4, 0.4) over many examples: mean 1/2, variance 1/4 / (2 alpha + 1) = 0.139.
  many = np.asarray(mixing.mix_weights(0, jnp.arange(20000), 0.4))
  assert abs(many.mean() - 0.5) < 0.01 and abs(many.var() - 0.25 / 1.8) < 0.01


def test_partners_cross_devices_so_pairs_do_not_depend_on_the_device_count():
  """Four devices' shards (simulated by a named vmap axis): each example's partner is the
  previous one of the global batch, as on one device."""
  x, targets, index = batch(b=8)
  shards = lambda a: a.reshape(4, 2, *a.shape[1:])
  for mix in ("mixup", "cutmix"):
    one = mixing.MIXES[mix](x, targets, index, seed=2, alpha=1.0)
    four = jax.vmap(lambda a, t, i: mixing.MIXES[mix](a, t, i, seed=2, alpha=1.0, axis_name="d"),
                    axis_name="d")(shards(x), shards(targets), shards(index))
    for got, want in zip(four, one):
      np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-6, err_msg=mix)


def test_cutmix_pastes_one_box_in_every_branch_and_weights_targets_by_pixels_kept():
  b, size = 6, 16
  x = jnp.broadcast_to(jnp.arange(1.0, b + 1)[:, None, None, None, None], (b, 3, size, size, 1))
  targets = jax.nn.one_hot(jnp.arange(b), 8)
  mixed, mixed_t = mixing.cutmix(x, targets, jnp.arange(40, 40 + b), seed=1, alpha=1.0)
  boxes = np.asarray(mixing.cut_boxes(1, jnp.arange(40, 40 + b), 1.0, size))
  pasted_any = False
  for i in range(b):
    own = np.asarray(mixed[i] == i + 1)
    other = np.asarray(mixed[i] == (i if i else b))  # the previous example's value
    assert (own | other).all()
    assert (own == own[:1]).all()  # the same box in every branch
    y0, x0, y1, x1 = boxes[i]
    assert other[0, :, :, 0].sum() == max(y1 - y0, 0) * max(x1 - x0, 0)
    assert other[0, y0:y1, x0:x1].all()
    kept = own[0].mean()
    assert mixed_t[i, i] == pytest.approx(kept, abs=1e-6)
    assert mixed_t[i, (i - 1) % b] == pytest.approx(1 - kept, abs=1e-6)
    pasted_any |= 0 < kept < 1
  assert pasted_any


def test_mixing_changes_the_step_s_gradient_and_needs_soft_targets(test_config, prepared):
  split = pipeline.load_split(prepared[1], "train", "majority", False)
  b = next(iter(pipeline.train_dataset(split, global_batch=16, seed=1)))
  b = {k: v for k, v in b.items() if k in train.STEP_INPUTS}
  mesh = parallel.make_mesh()
  norms = {}
  for mix in ("none", "mixup", "cutmix"):
    config = test_config.copy_and_resolve_references()
    config.data.mix, config.data.mix_alpha = mix, 1.0
    tx, lr = state_lib.make_optimizer(config, 10)
    state = train.init_state(config, mesh, tx)
    _, m = train.make_train_step(config, mesh, tx, lr)(state, parallel.global_batch(b, mesh))
    assert bool(m["finite"])
    norms[mix] = float(m["grad_norm"])
  for mix in ("mixup", "cutmix"):
    assert abs(norms[mix] - norms["none"]) > 1e-3 * norms["none"], norms
  config = test_config.copy_and_resolve_references()
  config.data.mix, config.data.label_mode = "cutmix", "multi_target"
  with pytest.raises(errors.ConfigError, match="data.mix='cutmix' .* cross_entropy"):
    validation.validate(config)
