"""Mixing augmentations of a training batch: mixup and CutMix over the model's input crops
[b, nb, S, S, C] and their soft targets [b, 8] (`data.mix`, `data.mix_alpha`).

Each example is mixed with its neighbour in the device's batch (the batch rolled by one: the
batches are already a seeded shuffle); its mixing weight `lam` ~ Beta(alpha, alpha), and its
CutMix box, come from a key folded from the run's seed and the example's global index, as its
crops' randomness does (`crops.example_keys`), so they do not depend on where it sits in a
batch. All branches of an example get the same `lam` and the same box; the targets are mixed
by the share of each face actually shown (FERPlus' vote distributions stay distributions).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

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


def partner(x: jax.Array) -> jax.Array:
  """Each example's mixing partner: the next one in the batch (the last takes the first)."""
  return jnp.roll(x, 1, axis=0)


def none(x, targets, index, *, seed: int, alpha: float):  # pylint: disable=unused-argument
  return x, targets


def mixup(x: jax.Array, targets: jax.Array, index: jax.Array, *, seed: int, alpha: float):
  """lam * x + (1 - lam) * partner, the targets alike (Zhang et al., 2018)."""
  lam = mix_weights(seed, index, alpha)
  mixed = lam[:, None, None, None, None] * x + (1 - lam[:, None, None, None, None]) * partner(x)
  return mixed.astype(x.dtype), lam[:, None] * targets + (1 - lam[:, None]) * partner(targets)


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


def cutmix(x: jax.Array, targets: jax.Array, index: jax.Array, *, seed: int, alpha: float):
  """The partner's pixels inside each example's box (the same box in every branch); the
  targets weighted by the share of pixels each face keeps."""
  size = x.shape[2]
  boxes = cut_boxes(seed, index, alpha, size)
  rows = jnp.arange(size)[None, :, None]
  cols = jnp.arange(size)[None, None, :]
  inside = ((rows >= boxes[:, 0, None, None]) & (rows < boxes[:, 2, None, None])
            & (cols >= boxes[:, 1, None, None]) & (cols < boxes[:, 3, None, None]))  # [b, S, S]
  mixed = jnp.where(inside[:, None, :, :, None], partner(x), x)
  own = 1.0 - jnp.mean(inside, axis=(1, 2))
  return mixed, own[:, None] * targets + (1 - own[:, None]) * partner(targets)


# data.mix -> fn(x [b, nb, S, S, C], targets [b, 8], index [b], *, seed, alpha) -> (x, targets)
MIXES: dict[str, Callable] = {"none": none, "mixup": mixup, "cutmix": cutmix}
