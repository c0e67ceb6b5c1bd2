"""Input pipeline throughput: cropped samples per second, host crops against on-device crops,
against what the training step consumes, in one run.

    python bench/input_pipeline.py                      # the committed sample, 64 px crops
    python bench/input_pipeline.py --tfds_dir=/tmp/tfds_ferplus --batches=40

A sample is one face cut into its five crops (training augmentation on). Measured:
- host: grain reads, decodes, shuffles and batches; the crops are cut on the host CPU in the
  batch transform (`data.crops_on='host'`), with 0 and 2 worker processes;
- device: grain reads, decodes and batches; the crops are cut by the jitted `batch_crops` that
  the train step runs (`data.crops_on='device'`), timed alone on the same batches;
- the step: samples/s of the training step of `configs/default.py` (ResNet-50, its crop size)
  and of `configs/cpu.py`, on this machine, fed fixed crops.
The verdict line compares the default (`configs/default.py: data.crops_on`) with the default
step.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rate(iterator, batches: int, batch: int, warmup: int = 2, after=lambda b: b) -> float:
  it = iter(iterator)
  for b in itertools.islice(it, warmup):
    after(b)
  t0 = time.perf_counter()
  n = 0
  for b in itertools.islice(it, batches):
    after(b)
    n += batch
  return n / (time.perf_counter() - t0)


def step_rate(config_module: str, batch: int, steps: int, size: int | None = None) -> tuple[float, str]:
  import importlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fer_jax import parallel, state as state_lib  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import train  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{config_module}").get_config()
  if size:
    config.data.crops.size = size
  config.data.crops_on = "host"
  config.data.source = "grain"  # the step is fed host batches here (cpu.py's own is "memory")
  config.batch_size = batch
  s = config.data.crops.size
  mesh = parallel.make_mesh()
  tx, lr = state_lib.make_optimizer(config, 100)
  state = train.init_state(config, mesh, tx)
  step = train.make_train_step(config, mesh, tx, lr)
  rng = np.random.default_rng(0)
  inputs = parallel.global_batch(dict(
      crops=rng.standard_normal((batch, 5, s, s, 1), np.float32),
      target=np.eye(8, dtype=np.float32)[rng.integers(0, 8, batch)],
      index=np.arange(batch, dtype=np.int32)), mesh)
  for _ in range(2):
    state, m = step(state, inputs)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, inputs)
  jax.block_until_ready(m)
  desc = (f"configs/{config_module}.py (ResNet-{config.model.depth}, width "
          f"{config.model.width}, {s} px)")
  return batch * steps / (time.perf_counter() - t0), desc


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--tfds_dir", default="", help="a prepared FERPlus (default: the sample)")
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--batches", type=int, default=20)
  p.add_argument("--step_batch", type=int, default=16)
  p.add_argument("--step_steps", type=int, default=3)
  args = p.parse_args()
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from fer_jax.data import crops, ferplus, pipeline  # pylint: disable=g-import-not-at-top

  tfds_dir = args.tfds_dir
  if not tfds_dir:
    tfds_dir = tempfile.mkdtemp(prefix="fer_bench_tfds_")
    ferplus.prepare(str(ROOT / "tests" / "data" / "ferplus_sample"), tfds_dir, "dlib")
  split = pipeline.load_split(pipeline.data_sources(tfds_dir, "dlib"), "train", "majority", False)
  cfg = crops.CropConfig(size=args.size)
  print(f"# {len(split)} training faces from {tfds_dir}; {args.size} px crops, batches of "
        f"{args.batch}; jax {jax.__version__} on {jax.default_backend()}", flush=True)

  results = {}
  for workers in (0, 2):
    ds = pipeline.train_dataset(split, global_batch=args.batch, seed=0, host_crops=cfg,
                                worker_count=workers, prefetch=2)
    results[f"host, {workers} workers"] = rate(ds, args.batches, args.batch,
                                               warmup=2 + 2 * workers)
  cut = jax.jit(lambda im, lm, idx: crops.batch_crops(
      im.astype(np.float32) / 255.0, lm, crops.example_keys(jax.random.key(0), idx), cfg, True))
  raw = list(itertools.islice(iter(pipeline.train_dataset(split, global_batch=args.batch, seed=0)),
                              args.batches + 2))
  read = rate(pipeline.train_dataset(split, global_batch=args.batch, seed=0), args.batches,
              args.batch)
  on_device = rate(raw, args.batches, args.batch,
                   after=lambda b: cut(b["image"], b["landmarks"], b["index"]).block_until_ready())
  results["device (crops in the step)"] = 1.0 / (1.0 / read + 1.0 / on_device)
  for name, value in results.items():
    print(f"{name:28s}: {value:8.1f} cropped samples/s", flush=True)
  print(f"{'  of which: read+decode':28s}: {read:8.1f} samples/s; crops alone {on_device:.1f} "
        f"samples/s", flush=True)

  default_on = default.get_config().data.crops_on
  chosen = results["device (crops in the step)"] if default_on == "device" else \
      results["host, 0 workers"]
  for module, size in (("default", None), ("default", args.size), ("cpu", None)):
    sps, desc = step_rate(module, args.step_batch, args.step_steps, size)
    print(f"training step, {desc}: {sps:.1f} samples/s -> the default pipeline "
          f"(crops_on={default_on}) delivers {chosen / sps:.0f}x that", flush=True)


if __name__ == "__main__":
  main()
