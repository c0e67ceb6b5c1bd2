"""Training-loop throughput of config variants, in one process: the real step and the real data
path (`train.DATA_SOURCES`: grain's host pipeline, or the device-resident source), so that what the
host costs shows up, unlike bench/train_step.py, which feeds fixed crops.

    python bench/loop.py --config=configs/cpu.py --tfds_dir=~/tensorflow_datasets \
        --variants='{"grain": {"data.source": "grain"}, "memory": {"data.source": "memory"}}'

The default `--variants` are these two: each names its source, so the comparison holds whatever
`data.source` the config sets (configs/cpu.py sets "memory").

Each variant builds its state, step and data, runs `--warmup` steps (compilation), then the
variants alternate, `--steps` steps each per round, for `--rounds` rounds; a variant's figure is
its median round, and the ratio compares it with the first variant's, measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_config(path: str, overrides: dict):
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    *parents, name = key.split(".")
    section = config
    for p in parents:
      section = section[p]
    section[name] = value
  return config


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--config", default=str(ROOT / "configs" / "cpu.py"))
  p.add_argument("--tfds_dir", default="~/tensorflow_datasets")
  p.add_argument("--variants", default='{"grain": {"data.source": "grain"}, '
                                       '"memory": {"data.source": "memory"}}')
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--rounds", type=int, default=4)
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  from fer_jax import parallel, state as state_lib  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import train  # pylint: disable=g-import-not-at-top
  from fer_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  tfds_dir = os.path.expandvars(os.path.expanduser(args.tfds_dir))
  variants = json.loads(args.variants)
  mesh = parallel.make_mesh()
  runs = {}
  for name, overrides in variants.items():
    config = load_config(args.config, overrides)
    sources = pipeline.open_sources(tfds_dir, config.data.landmarks, prepare_if_missing=False)
    split = pipeline.load_split(sources, config.data.train_split, config.data.label_mode, False)
    spe = pipeline.steps_per_epoch(split, config.batch_size)
    tx, lr = state_lib.make_optimizer(config, spe)
    t0 = time.perf_counter()
    run = dict(state=train.init_state(config, mesh, tx),
               step=train.make_train_step(config, mesh, tx, lr),
               data=train.train_data(config, split, mesh), t=0, rates=[])
    for _ in range(args.warmup):
      run["state"], m = run["step"](run["state"], *run["data"].inputs(run["t"]))
      run["t"] += 1
    jax.block_until_ready(m)
    print(f"# {name}: {json.dumps(overrides)}; batch {config.batch_size}, "
          f"{config.data.crops.size} px, ResNet-{config.model.depth} x{config.model.width}; "
          f"set-up, compile and {args.warmup} steps {time.perf_counter() - t0:.1f}s", flush=True)
    runs[name] = run
  for r in range(args.rounds):
    for name, run in runs.items():
      t0 = time.perf_counter()
      for _ in range(args.steps):
        run["state"], m = run["step"](run["state"], *run["data"].inputs(run["t"]))
        run["t"] += 1
      jax.block_until_ready(m)
      run["rates"].append(args.steps / (time.perf_counter() - t0))
    print(f"round {r + 1}: " + ", ".join(f"{n} {run['rates'][-1]:.3f}" for n, run in
                                         runs.items()) + " steps/s", flush=True)
  first = statistics.median(next(iter(runs.values()))["rates"])
  print(f"# {jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}; "
        f"median of {args.rounds} rounds of {args.steps} steps")
  for name, run in runs.items():
    med = statistics.median(run["rates"])
    print(f"{name}: {med:.3f} steps/s, ratio {med / first:.2f} (rounds "
          f"{min(run['rates']):.3f}-{max(run['rates']):.3f})")


if __name__ == "__main__":
  main()
