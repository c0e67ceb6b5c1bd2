"""The classification loss and the eyes-over-occluded constraint, as pure functions.

    L2 = softmax cross-entropy            (hard labels, or the soft targets of FERPlus'
                                           probability and crossentropy label modes)
    L1 = max(0, margin - (mu_hi - mu_lo))  (eq. 3; hi = eyes, lo = occluded by default)
    L  = L2 + lambda * L1                  (eq. 5; lambda = 1)

Every loss takes per-example `weights` (1 for real examples, 0 for evaluation padding) and
returns the weighted batch mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  if weights is None:
    return jnp.mean(values)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def cross_entropy_per_example(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-sum_c targets_c log softmax(logits)_c for soft (or one-hot) targets [B, C] -> [B]."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def cross_entropy(logits: jax.Array, targets: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  """Softmax cross-entropy with soft or one-hot targets, weighted batch mean."""
  return weighted_mean(cross_entropy_per_example(logits, targets), weights)


def hard_cross_entropy(logits: jax.Array, labels: jax.Array,
                       weights: jax.Array | None = None) -> jax.Array:
  """Softmax cross-entropy with integer labels [B]."""
  return cross_entropy(logits, jax.nn.one_hot(labels, logits.shape[-1]), weights)


def multi_target_per_example(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Microsoft's multi-target loss: -log of the probability mass on the target set."""
  probs = jax.nn.softmax(logits.astype(jnp.float32))
  return -jnp.log(jnp.maximum(jnp.sum(probs * (targets > 0), axis=-1), 1e-12))


def constraint_per_example(mu: jax.Array, hi: int, lo: int, margin: float) -> jax.Array:
  """max(0, margin - (mu[:, hi] - mu[:, lo])) per example."""
  return jax.nn.relu(margin - (mu[:, hi] - mu[:, lo]))


def constraint_loss(mu: jax.Array, hi: int, lo: int, margin: float,
                    weights: jax.Array | None = None) -> jax.Array:
  """The constraint (eq. 3), weighted batch mean. Zero gradient wherever the margin holds."""
  return weighted_mean(constraint_per_example(mu, hi, lo, margin), weights)


def classification_per_example(logits: jax.Array, targets: jax.Array, kind: str) -> jax.Array:
  """`cross_entropy` (hard or soft targets) or `multi_target`."""
  if kind == "cross_entropy":
    return cross_entropy_per_example(logits, targets)
  if kind == "multi_target":
    return multi_target_per_example(logits, targets)
  raise ValueError(f"classification loss must be cross_entropy or multi_target, got {kind!r}")


def total_loss(logits: jax.Array, mu: jax.Array, targets: jax.Array, *, hi: int, lo: int,
               margin: float, constraint_weight: float = 1.0, kind: str = "cross_entropy",
               weights: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L = L2 + lambda * L1; returns (L, dict(ce=L2, constraint=L1))."""
  ce = weighted_mean(classification_per_example(logits, targets, kind), weights)
  constraint = constraint_loss(mu, hi, lo, margin, weights)
  return ce + constraint_weight * constraint, dict(ce=ce, constraint=constraint)
