"""Mixing augmentations of a training batch: mixup and CutMix over the model's input crops
[b, nb, S, S, C] and their soft targets [b, 8] (`data.mix`, `data.mix_alpha`).

Each example is mixed with the one before it in the global batch (the first with the last; the
batches are already a seeded shuffle), across devices too (`lax.ppermute` hands each device's
last example to the next device), so the pairs do not depend on the device count; its mixing
weight `lam` ~ Beta(alpha, alpha), and its
CutMix box, come from a key folded from the run's seed and the example's global index, as its
crops' randomness does (`crops.example_keys`), so they do not depend on where it sits in a
batch. All branches of an example get the same `lam` and the same box; the targets are mixed
by the share of each face actually shown (FERPlus' vote distributions stay distributions).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from fer_jax.data import crops as crops_lib

MIX_STREAM = 7  # folded into each example's key: the mix draws apart from the crops' draws


def mix_keys(seed: int, index: jax.Array) -> jax.Array:
  """[b] keys, one per example, from the run's seed and the examples' global indices."""
  keys = crops_lib.example_keys(jax.random.key(seed), index)
  return jax.vmap(lambda k: jax.random.fold_in(k, MIX_STREAM))(keys)


def mix_weights(seed: int, index: jax.Array, alpha: float) -> jax.Array:
  """[b] lam ~ Beta(alpha, alpha): each example's own share of its mixed image."""
  keys = mix_keys(seed, index)
  return jax.vmap(lambda k: jax.random.beta(jax.random.fold_in(k, 0), alpha, alpha))(keys)


def partner(x: jax.Array, axis_name: str | None = None) -> jax.Array:
  """Each example's mixing partner: the previous one in the global batch (the first takes the
  last). Under `axis_name` (shard_map's data axis) `x` is one device's rows of the global batch,
  in device order, and the previous device's last row comes by `lax.ppermute`."""
  if axis_name is None:
    return jnp.roll(x, 1, axis=0)
  n = lax.axis_size(axis_name)
  last = lax.ppermute(x[-1:], axis_name, [(i, (i + 1) % n) for i in range(n)])
  return jnp.concatenate([last, x[:-1]], axis=0)


def none(x, targets, index, *, seed: int, alpha: float,  # pylint: disable=unused-argument
         axis_name: str | None = None):
  return x, targets


def mixup(x: jax.Array, targets: jax.Array, index: jax.Array, *, seed: int, alpha: float,
          axis_name: str | None = None):
  """lam * x + (1 - lam) * partner, the targets alike (Zhang et al., 2018)."""
  lam = mix_weights(seed, index, alpha)
  other, other_targets = partner(x, axis_name), partner(targets, axis_name)
  mixed = lam[:, None, None, None, None] * x + (1 - lam[:, None, None, None, None]) * other
  return mixed.astype(x.dtype), lam[:, None] * targets + (1 - lam[:, None]) * other_targets


def cut_boxes(seed: int, index: jax.Array, alpha: float, size: int) -> jax.Array:
  """[b, 4] (y0, x0, y1, x1) integer boxes of side sqrt(1 - lam) * size around a uniform
  centre, clipped to the image (Yun et al., 2019)."""
  lam = mix_weights(seed, index, alpha)
  keys = mix_keys(seed, index)
  centre = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), (2,)))(keys) * size
  half = 0.5 * jnp.sqrt(1.0 - lam) * size
  lo = jnp.clip(jnp.round(centre - half[:, None]), 0, size)
  hi = jnp.clip(jnp.round(centre + half[:, None]), 0, size)
  return jnp.concatenate([lo, hi], axis=1).astype(jnp.int32)


def cutmix(x: jax.Array, targets: jax.Array, index: jax.Array, *, seed: int, alpha: float,
           axis_name: str | None = None):
  """The partner's pixels inside each example's box (the same box in every branch); the
  targets weighted by the share of pixels each face keeps."""
  size = x.shape[2]
  boxes = cut_boxes(seed, index, alpha, size)
  rows = jnp.arange(size)[None, :, None]
  cols = jnp.arange(size)[None, None, :]
  inside = ((rows >= boxes[:, 0, None, None]) & (rows < boxes[:, 2, None, None])
            & (cols >= boxes[:, 1, None, None]) & (cols < boxes[:, 3, None, None]))  # [b, S, S]
  mixed = jnp.where(inside[:, None, :, :, None], partner(x, axis_name), x)
  own = 1.0 - jnp.mean(inside, axis=(1, 2))
  return mixed, own[:, None] * targets + (1 - own[:, None]) * partner(targets, axis_name)


# data.mix -> fn(x [b, nb, S, S, C], targets [b, 8], index [b], *, seed, alpha, axis_name)
#   -> (x, targets)
MIXES: dict[str, Callable] = {"none": none, "mixup": mixup, "cutmix": cutmix}
