"""The classification loss and the eyes-over-occluded constraint, as pure functions.

    L2 = softmax cross-entropy            (hard labels, or the soft targets of FERPlus'
                                           probability and crossentropy label modes)
    L1 = max(0, margin - (mu_hi - mu_lo))  (eq. 3; hi = eyes, lo = occluded by default)
    L  = L2 + lambda * L1                  (eq. 5; lambda = 1)

Every loss takes per-example `weights` (1 for real examples, 0 for evaluation padding) and
returns the weighted batch mean. A run without a constraint (weight 0, a dropped branch of the
pair, or no branch weights) passes `hi=lo=None` and its constraint term is 0.

The training step takes the loss as one function, `make_loss_fn(...)(out, batch, key) ->
(loss, parts)`, built once from the config; a new classification loss is one function plus an
entry in `CLASSIFICATION`.
"""

from __future__ import annotations

from typing import Any, Callable

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


def hinge_active(mu: jax.Array, hi: int, lo: int, margin: float,
                 weights: jax.Array | None = None) -> jax.Array:
  """The fraction of examples whose constraint is active (mu_hi - mu_lo < margin): those
  that the hinge pushes; 0 means the constraint does nothing to this batch."""
  return weighted_mean((mu[:, hi] - mu[:, lo] < margin).astype(jnp.float32), weights)


# Classification losses per example, (logits [B, C], targets [B, C]) -> [B].
CLASSIFICATION: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "cross_entropy": cross_entropy_per_example,  # hard or soft targets
    "multi_target": multi_target_per_example,
}


def classification_per_example(logits: jax.Array, targets: jax.Array, kind: str) -> jax.Array:
  if kind not in CLASSIFICATION:
    raise ValueError(f"classification loss must be one of {sorted(CLASSIFICATION)}, got {kind!r}")
  return CLASSIFICATION[kind](logits, targets)


def total_loss(logits: jax.Array, mu: jax.Array, targets: jax.Array, *, hi: int | None,
               lo: int | None, margin: float, constraint_weight: float = 1.0,
               kind: str = "cross_entropy", weights: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L = L2 + lambda * L1; returns (L, dict(ce=L2, constraint=L1[, hinge_active])); without a
  constraint (hi is None) L = L2 and L1 = 0."""
  ce = weighted_mean(classification_per_example(logits, targets, kind), weights)
  if hi is None or lo is None:
    return ce, dict(ce=ce, constraint=jnp.zeros((), jnp.float32))
  constraint = constraint_loss(mu, hi, lo, margin, weights)
  return ce + constraint_weight * constraint, dict(
      ce=ce, constraint=constraint, hinge_active=hinge_active(mu, hi, lo, margin, weights))


def auxiliary_loss(aux_logits: jax.Array, targets: jax.Array, kind: str = "cross_entropy",
                   weights: jax.Array | None = None) -> jax.Array:
  """Multi-view training's auxiliary term: the mean over branches of each branch's own
  classifier's loss (aux_logits [B, nb, classes])."""
  per_branch = jax.vmap(lambda l: weighted_mean(classification_per_example(l, targets, kind),
                                                weights), in_axes=1)(aux_logits)
  return jnp.mean(per_branch)


def classification_kind(label_mode: str, name: str = "auto") -> str:
  """`loss.classification`: `auto` is multi_target for the multi_target label mode and
  cross_entropy (hard or soft targets) for the others."""
  if name == "auto":
    return "multi_target" if label_mode == "multi_target" else "cross_entropy"
  if name not in CLASSIFICATION:
    raise ValueError(f"config.loss.classification must be auto or one of "
                     f"{sorted(CLASSIFICATION)}, got {name!r}")
  return name


def make_loss_fn(*, kind: str, label_mode: str, constraint: tuple[int, int] | None,
                 margin: float, constraint_weight: float, aux_weight: float = 0.0
                 ) -> Callable[[dict[str, Any], dict[str, jax.Array], jax.Array],
                               tuple[jax.Array, dict[str, jax.Array]]]:
  """The training loss as one function `(model output, batch, step key) -> (L, parts)`.

  In the `probability` label mode (Microsoft's) each example's target is a one-hot sample of
  its vote distribution, drawn from `fold_in(key, example index)`; the other modes use the
  batch's targets as they are. With `aux_weight` > 0 (multi-view training), L gains
  aux_weight x `auxiliary_loss` of the model's `aux_logits` (and `parts` an `aux` entry).
  """
  hi, lo = constraint if constraint is not None else (None, None)

  def loss_fn(out, batch, key):
    targets = batch["target"]
    if label_mode == "probability":
      keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(batch["index"])
      drawn = jax.vmap(jax.random.categorical)(keys, jnp.log(targets + 1e-30))
      targets = jax.nn.one_hot(drawn, targets.shape[-1])
    loss, parts = total_loss(out["logits"], out["mu"], targets, hi=hi, lo=lo, margin=margin,
                             constraint_weight=constraint_weight, kind=kind)
    if aux_weight > 0:
      parts["aux"] = auxiliary_loss(out["aux_logits"], targets, kind)
      loss = loss + aux_weight * parts["aux"]
    return loss, parts

  return loss_fn
