"""Cross-entropy and the eyes-over-occluded constraint against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import losses


def test_cross_entropy_hand_computed():
  # Uniform logits over 8 classes: ln 8.
  np.testing.assert_allclose(losses.hard_cross_entropy(jnp.zeros((1, 8)), jnp.array([3])),
                             math.log(8), rtol=1e-6)
  # logits (ln 3, 0 x 7): p0 = 3 / 10.
  logits = jnp.array([[math.log(3.0)] + [0.0] * 7])
  np.testing.assert_allclose(losses.hard_cross_entropy(logits, jnp.array([0])),
                             -math.log(0.3), rtol=1e-6)
  # Soft target (1/2, 1/2, 0, ...): -(ln 0.3 + ln 0.1) / 2.
  soft = jnp.array([[0.5, 0.5] + [0.0] * 6])
  np.testing.assert_allclose(losses.cross_entropy(logits, soft),
                             -(math.log(0.3) + math.log(0.1)) / 2, rtol=1e-6)
  # Weighted mean: a zero-weight row does not count.
  both = jnp.concatenate([logits, jnp.zeros((1, 8))])
  np.testing.assert_allclose(
      losses.hard_cross_entropy(both, jnp.array([0, 0]), jnp.array([1.0, 0.0])),
      -math.log(0.3), rtol=1e-6)


def test_multi_target_loss_hand_computed():
  logits = jnp.array([[math.log(3.0)] + [0.0] * 7])
  targets = jnp.array([[0.6, 0.4] + [0.0] * 6])
  np.testing.assert_allclose(losses.multi_target_per_example(logits, targets), -math.log(0.4),
                             rtol=1e-6)


def test_constraint_hand_computed():
  # Branch order face, eyes, nose, mouth, occluded: hi = 1, lo = 4.
  mu = jnp.array([[0.5, 0.60, 0.5, 0.5, 0.58],    # gap 0.02 < 0.03: loss 0.01
                  [0.5, 0.70, 0.5, 0.5, 0.50],    # gap 0.20: loss 0
                  [0.5, 0.40, 0.5, 0.5, 0.45]])   # gap -0.05: loss 0.08
  np.testing.assert_allclose(losses.constraint_per_example(mu, 1, 4, 0.03), [0.01, 0.0, 0.08],
                             atol=1e-7)
  np.testing.assert_allclose(losses.constraint_loss(mu, 1, 4, 0.03), 0.03, atol=1e-7)
  total, parts = losses.total_loss(jnp.zeros((3, 8)), mu, jax.nn.one_hot(jnp.array([0, 1, 2]), 8),
                                   hi=1, lo=4, margin=0.03, constraint_weight=2.0)
  np.testing.assert_allclose(parts["ce"], math.log(8), rtol=1e-6)
  np.testing.assert_allclose(total, math.log(8) + 2 * 0.03, rtol=1e-6)
  np.testing.assert_allclose(parts["hinge_active"], 2 / 3, rtol=1e-6)  # rows 1 and 3 push
  # Without a constraint (a run whose pair is dropped): L = L2, L1 = 0, no hinge to report.
  total, parts = losses.total_loss(jnp.zeros((3, 8)), mu, jax.nn.one_hot(jnp.array([0, 1, 2]), 8),
                                   hi=None, lo=None, margin=0.03, constraint_weight=2.0)
  np.testing.assert_allclose(total, math.log(8), rtol=1e-6)
  assert float(parts["constraint"]) == 0.0 and "hinge_active" not in parts


def test_probability_mode_samples_one_hot_targets_per_example():
  """Microsoft's `probability` mode: each target is a one-hot draw from the vote distribution,
  a pure function of (step key, example index)."""
  fn = losses.make_loss_fn(kind="cross_entropy", label_mode="probability", constraint=None,
                           margin=0.03, constraint_weight=1.0)
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.25] + [1e-9] * 5] * 4))
  batch = dict(target=jnp.array([[1.0] + [0.0] * 7, [0.0, 1.0] + [0.0] * 6,
                                 [0.0, 0.0, 1.0] + [0.0] * 5, [0.0, 0.0, 1.0] + [0.0] * 5]),
               index=jnp.arange(4))
  # Degenerate distributions draw their only class: CE = -log p(class).
  loss, _ = fn(dict(logits=logits, mu=jnp.ones((4, 1))), batch, jax.random.key(0))
  np.testing.assert_allclose(loss, -(math.log(0.5) + 3 * math.log(0.25)) / 4, rtol=1e-5)
  soft = dict(batch, target=jnp.full((4, 8), 1 / 8))
  a = fn(dict(logits=logits, mu=jnp.ones((4, 1))), soft, jax.random.key(0))[0]
  assert a == fn(dict(logits=logits, mu=jnp.ones((4, 1))), soft, jax.random.key(0))[0]


def test_constraint_gradient_zero_when_margin_holds():
  mu = jnp.array([[0.5, 0.70, 0.5, 0.5, 0.50], [0.1, 0.9, 0.2, 0.3, 0.1]])
  g = jax.grad(lambda m: losses.constraint_loss(m, 1, 4, 0.03))(mu)
  np.testing.assert_array_equal(g, np.zeros_like(mu))
  # Where it is violated, the gradient pushes eyes up and occluded down (-1/B and +1/B).
  g = jax.grad(lambda m: losses.constraint_loss(m, 1, 4, 0.03))(mu.at[0, 4].set(0.69))
  np.testing.assert_allclose(g[0], [0, -0.5, 0, 0, 0.5])
  np.testing.assert_array_equal(g[1], np.zeros(5))


def test_auxiliary_loss_is_the_mean_of_the_branches_cross_entropies():
  targets = jnp.array([[1.0, 0.0], [0.25, 0.75]])
  aux = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]], [[0.2, 0.8], [0.5, 0.5]]]))  # [B, nb, C]
  # branch 0: -(log .5), -(.25 log .2 + .75 log .8); branch 1: -(log .9), -(log .5)
  b0 = (-np.log(0.5) - (0.25 * np.log(0.2) + 0.75 * np.log(0.8))) / 2
  b1 = (-np.log(0.9) - np.log(0.5)) / 2
  assert abs(float(losses.auxiliary_loss(aux, targets)) - (b0 + b1) / 2) < 1e-6
  loss_fn = losses.make_loss_fn(kind="cross_entropy", label_mode="crossentropy",
                                constraint=None, margin=0.0, constraint_weight=0.0,
                                aux_weight=0.5)
  out = dict(logits=jnp.zeros((2, 2)), mu=jnp.ones((2, 2)), aux_logits=aux)
  loss, parts = loss_fn(out, dict(target=targets, index=jnp.arange(2)), jax.random.key(0))
  assert abs(float(parts["aux"]) - (b0 + b1) / 2) < 1e-6
  assert abs(float(loss) - (np.log(2) + 0.5 * (b0 + b1) / 2)) < 1e-6
