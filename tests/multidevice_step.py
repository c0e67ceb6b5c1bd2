"""Run by test_train.py in a subprocess with 4 fake CPU devices: two train steps on the same
global batches over 1 device, fed by grain, and over 4 devices, each gathering its rows from
device-resident data (`data.source="memory"`); prints the largest differences as JSON. (Host
batches split over several devices are checked by tests/test_multihost.py, two processes.)"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from configs import test as test_config  # pylint: disable=g-import-not-at-top
from fer_jax.data import pipeline  # pylint: disable=g-import-not-at-top
from fer_jax.modes import train  # pylint: disable=g-import-not-at-top
from fer_jax import parallel, state as state_lib  # pylint: disable=g-import-not-at-top


def main(tfds_dir):
  assert jax.device_count() == 4, jax.devices()
  config = test_config.get_config()
  config.data.tfds_dir = tfds_dir
  split = pipeline.load_split(pipeline.data_sources(tfds_dir, config.data.landmarks), "train",
                              "majority", False)
  stream = iter(pipeline.train_dataset(split, global_batch=config.batch_size, seed=config.seed))
  batches = [{k: v for k, v in next(stream).items() if k in train.STEP_INPUTS} for _ in range(2)]
  memory_config = config.copy_and_resolve_references()
  memory_config.data.source = "memory"
  out = {}
  for name, n, cfg in (("grain1", 1, config), ("memory4", 4, memory_config)):
    mesh = parallel.make_mesh(jax.devices()[:n])
    tx, lr = state_lib.make_optimizer(cfg, 10)
    state = train.init_state(cfg, mesh, tx)
    step = train.make_train_step(cfg, mesh, tx, lr)
    data = train.MemoryData(cfg, split, mesh) if cfg.data.source == "memory" else None
    for t, batch in enumerate(batches):  # the first two batches of the stream
      inputs = data.inputs(t) if data else (parallel.global_batch(batch, mesh),)
      state, metrics = step(state, *inputs)
    out[name] = jax.device_get((state.params, state.batch_stats, metrics))
  diff = lambda a, b: max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  one = out["grain1"]
  print(json.dumps({
      **{f"{k}_params": diff(one[0], out[k][0]) for k in ("memory4",)},
      **{f"{k}_batch_stats": diff(one[1], out[k][1]) for k in ("memory4",)},
      "loss": [float(out[k][2]["loss"]) for k in ("grain1", "memory4")],
      "param_scale": max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(one[0]))}))


if __name__ == "__main__":
  main(sys.argv[1])
