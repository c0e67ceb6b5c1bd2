"""Run by test_train.py in a subprocess with 4 fake CPU devices: one train step over 4 devices
and over 1 device on the same global batch; prints the largest differences as JSON."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from configs import test as test_config  # pylint: disable=g-import-not-at-top
from fer_jax import parallel, state as state_lib, train  # pylint: disable=g-import-not-at-top
from fer_jax.data import pipeline  # pylint: disable=g-import-not-at-top


def main(tfds_dir):
  assert jax.device_count() == 4, jax.devices()
  config = test_config.get_config()
  config.data.tfds_dir = tfds_dir
  split = pipeline.load_split(pipeline.data_sources(tfds_dir, config.data.landmarks), "train", "majority", False)
  batch = next(iter(pipeline.train_dataset(split, global_batch=16, seed=0)))
  batch = {k: v for k, v in batch.items() if k in train.STEP_INPUTS}
  out = {}
  for n in (1, 4):
    mesh = parallel.make_mesh(jax.devices()[:n])
    tx, lr = state_lib.make_optimizer(config, 10)
    state = train.init_state(config, mesh, tx)
    step = train.make_train_step(config, mesh, tx, lr)
    for _ in range(2):
      state, metrics = step(state, parallel.global_batch(batch, mesh))
    out[n] = jax.device_get((state.params, state.batch_stats, metrics))
  diff = lambda a, b: max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  print(json.dumps(dict(params=diff(out[1][0], out[4][0]), batch_stats=diff(out[1][1], out[4][1]),
                        loss=[float(out[1][2]["loss"]), float(out[4][2]["loss"])],
                        param_scale=max(float(np.abs(np.asarray(x)).max())
                                        for x in jax.tree.leaves(out[1][0])))))


if __name__ == "__main__":
  main(sys.argv[1])
