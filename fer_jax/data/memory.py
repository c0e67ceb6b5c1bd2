"""Device-resident data (`data.source = "memory"`): every face of a split decoded once into
arrays that live on the devices, so that the jitted step gathers its own batch and the training
loop runs no host pipeline at all.

FERPlus is small (28,558 faces of 48x48 bytes, about 66 MB, plus 15 MB of landmarks), so every
device holds the whole split, replicated: any device can gather any example, on one host or many.

The order is the grain path's own (`pipeline.shuffled_stream`: the same seeded shuffle,
reshuffled every epoch, global batches that run on across epoch boundaries). It is computed on
the host once per chunk of steps, as a table [steps, global batch] of row numbers that goes to
the devices with the chunk; step t takes row t of it. Each example keeps the `index` the grain
path gives it (its position in the global stream), so it gets the same crops. With one process
the batches are the grain path's, row for row. With several processes the grain path hands
process p the stream positions p, p + P, p + 2P, ..., while here device d takes the d-th block
of B/D positions of each global batch: the same examples in each global batch, arranged
differently across devices (the same global-batch gradient up to float summation order).

A checkpoint's data position is its step: the stream is a pure function of (seed, step).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from fer_jax.data import ferplus
from fer_jax.data import pipeline
from fer_jax import parallel


def decode(split: pipeline.Split) -> dict[str, np.ndarray]:
  """Every kept example of `split`, decoded once: image uint8 [N, F, F, 1], landmarks float32
  [N, 68, 2], target float32 [N, 8] (row i is `split.indices[i]`)."""
  images, landmarks = [], []
  for i in split.indices:
    ex = split.source[int(i)]
    images.append(ferplus.decode_png(ex["image"]))
    landmarks.append(np.asarray(ex["landmarks"], np.float32))
  return dict(image=np.stack(images), landmarks=np.stack(landmarks),
              target=np.asarray(split.targets, np.float32))


def load(split: pipeline.Split, mesh) -> dict[str, jax.Array]:
  """`decode(split)` placed on every device of `mesh` (each process gives the whole split)."""
  if len(split) == 0:
    raise ValueError(f"split {split.name!r} keeps no examples")
  replicated = parallel.replicated(mesh)
  return {k: jax.make_array_from_process_local_data(replicated, v)
          for k, v in decode(split).items()}


def order_table(num_examples: int, seed: int, global_batch: int, first_step: int,
                num_steps: int) -> np.ndarray:
  """Rows of the examples of global batches `first_step` .. `first_step + num_steps - 1`:
  int32 [num_steps, global_batch], in the grain path's order."""
  stream = pipeline.shuffled_stream(num_examples, seed)
  start = first_step * global_batch
  rows = [stream[p] for p in range(start, start + num_steps * global_batch)]
  return np.asarray(rows, np.int32).reshape(num_steps, global_batch)


def place_table(table: np.ndarray, mesh) -> jax.Array:
  """An order table on the devices, each holding its columns (its share of every batch)."""
  sharding = NamedSharding(mesh, P(None, parallel.DATA_AXIS))
  return jax.make_array_from_callback(table.shape, sharding, lambda idx: table[idx])


def gather(arrays: dict[str, jax.Array], table: jax.Array, first_step: jax.Array,
           step: jax.Array, global_batch: int, axis_name: str = parallel.DATA_AXIS
           ) -> dict[str, jax.Array]:
  """Inside the per-device step: this device's share of global batch `step`, with the keys a
  grain batch has (`image`, `landmarks`, `target`, `index`)."""
  rows = jax.lax.dynamic_index_in_dim(table, step - first_step, keepdims=False)
  local = rows.shape[0]
  first = step * global_batch + jax.lax.axis_index(axis_name) * local
  batch: dict[str, Any] = {k: jnp.take(v, rows, axis=0) for k, v in arrays.items()}
  batch["index"] = (first + jnp.arange(local)).astype(jnp.int32)
  return batch
