"""The paper's model on one accelerator: samples/s, model FLOP utilisation, and how long the
paper's 30-epoch recipe would take (step benchmark); or the paper's recipe itself, end to end
(`--train`). The benchmark runs in under five minutes on one GPU.

    python bench/gpu.py                       # ResNet-50, five 112 px branches, bf16, batch 256
    python bench/gpu.py --dtype=float32 --batch=128
    python bench/gpu.py --smoke               # tiny shapes: checks the script on a CPU

    python bench/gpu.py --train --config.data.manual_dir=../shared/data/ferplus
    python bench/gpu.py --train --smoke       # the same path on the committed sample, on a CPU

    python3 bench/gpu.py --study=configs/studies/ablation.py --config.data.manual_dir=../shared/data/ferplus
    python3 bench/gpu.py --study=configs/studies/ablation.py --smoke   # one cell, on a CPU

Step benchmark: fer_jax's real train step (`train.make_train_step`, crops cut inside the step
from 48 px faces, `configs/default.py` with the overrides below) on synthetic faces. Model FLOPs
come from XLA's cost analysis of the compiled step; utilisation divides the achieved FLOP/s by
the device's peak dense rate for the compute dtype (`--peak_tflops`, else a table of known
chips). The 30-epoch estimate uses the 25,045 majority-vote training faces of FERPlus.

`--train`: prepares the data (once, into `data.tfds_dir`), trains `configs/default.py`
(ResNet-50, 112 px, 30 epochs) in bfloat16 from device-resident data (`data.source=memory`)
into `--workdir`, checkpointing every epoch (run the same command again to resume a cut run),
evaluates validation, then `test` when the manual dir has FER2013Test/ (after training only),
and prints wall time, training samples/s and model FLOP utilisation. Any `--config.KEY=VALUE`
overrides the config. `--smoke` shrinks everything to the tests' size.

`--study=PATH`: a study config (configs/studies/ablation.py or margin.py) at the paper's scale
(`PATH:paper`: configs/default.py's ResNet-50, 112 px, 30 epochs, in bfloat16 from
device-resident data, the study's arms and seeds, every run evaluated under the occluders with
refitted and oracle landmarks) into `--workdir` (default /tmp/fer_gpu_study). Each call works
for `--budget_s` seconds (default 540: a 10-minute lease with room for start-up), then the run
in training saves and the study stops; the same command continues it. `--smoke`: one cell (the
ablation's A), one seed, the tests' model on the committed sample.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Peak dense TFLOP/s per chip: (bfloat16, float32 or TF32 as XLA uses it).
PEAKS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0),
         "L4": (121.0, 60.0), "TPU v4": (275.0, 275.0), "TPU v5 lite": (197.0, 197.0),
         "TPU v5p": (459.0, 459.0), "TPU v6 lite": (918.0, 918.0)}
TRAIN_FACES = 25_045
EPOCHS = 30


def peak_for(device, dtype: str, given: float) -> float | None:
  if given > 0:
    return given
  kind = getattr(device, "device_kind", "")
  for name, (bf16, f32) in PEAKS.items():
    if name.lower() in kind.lower():
      return bf16 if dtype == "bfloat16" else f32
  return None


def train_config(overrides: list[str], smoke: bool):
  """configs/default.py as `--train` runs it: bfloat16, device-resident data, a checkpoint and
  an evaluation per epoch; `smoke`: the tests' tiny model on the committed sample."""
  from configs import default, test  # pylint: disable=g-import-not-at-top
  from fer_jax import overrides as overrides_lib  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  if smoke:
    config = test.get_config()
    config.data.manual_dir = str(ROOT / "tests" / "data" / "ferplus_sample")
  config.data.source = "memory"
  config.model.dtype = "bfloat16"
  try:
    return overrides_lib.apply_flags(config, overrides)
  except (KeyError, TypeError, ValueError) as e:
    raise SystemExit(f"gpu.py: error: bad --config override: {e}") from None


def flops_per_step(config, num_examples: int) -> float:
  """XLA's count of the FLOPs of one train step of `config` as `--train` ran it (per device;
  the same program, so the compilation cache serves it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from fer_jax import parallel, state as state_lib  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import train  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  steps_per_epoch = max(num_examples // config.batch_size, 1)
  tx, lr = state_lib.make_optimizer(config, steps_per_epoch)
  replicated = parallel.replicated(mesh)
  shape = lambda s, d, sharding=replicated: jax.ShapeDtypeStruct(s, d, sharding=sharding)
  arrays = dict(image=shape((num_examples, 48, 48, 1), np.uint8),
                landmarks=shape((num_examples, 68, 2), np.float32),
                target=shape((num_examples, 8), np.float32))
  table = shape((train.MemoryData.TABLE_STEPS, config.batch_size), np.int32,
                NamedSharding(mesh, P(None, parallel.DATA_AXIS)))
  state = jax.tree.map(lambda x: shape(x.shape, x.dtype),
                       state_lib.abstract_train_state(config, steps_per_epoch))
  step = train.make_train_step(config, mesh, tx, lr)
  cost = step.lower(state, arrays, table, shape((), np.int32)).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def train_paper(args, overrides: list[str]) -> None:
  """`--train`: prepare, train, evaluate; print wall time, samples/s and MFU."""
  import json  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  from fer_jax.data import ferplus  # pylint: disable=g-import-not-at-top
  cli.setup_logging()
  config = train_config(overrides, args.smoke)
  workdir = args.workdir or ("/tmp/fer_gpu_smoke" if args.smoke else "/tmp/fer_gpu_paper")
  if not jax.config.jax_compilation_cache_dir:  # a resumed run, and the FLOP count, reuse it
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(workdir) / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  t0 = time.perf_counter()
  result = cli.run("train", config, workdir)
  wall = time.perf_counter() - t0
  rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
          if l.strip()]
  rates = [r["steps_per_second"] for r in rows if r.get("kind") == "train"][1:]  # compile out
  sps = float(np.median(rates)) * config.batch_size if rates else float("nan")
  devices = jax.devices()
  print(f"# {len(devices)} x {devices[0].device_kind}: ResNet-{config.model.depth}, "
        f"{config.data.crops.size} px, {config.model.dtype}, batch {config.batch_size}, "
        f"source={config.data.source}", flush=True)
  print(f"trained to step {result['step']} in {wall:.0f} s wall (prepare, compile and evaluations "
        f"included); {sps:,.0f} samples/s while training; validation accuracy "
        f"{result.get('accuracy', float('nan')):.4f} at the final step", flush=True)
  flops = flops_per_step(config, result["train_examples"])
  peak = peak_for(devices[0], config.model.dtype, args.peak_tflops)
  if flops and rates:
    achieved = flops * float(np.median(rates)) / 1e12
    mfu = f"{100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s" if peak else "peak unknown"
    print(f"model FLOPs {flops / (config.batch_size / len(devices)) / 1e9:.2f} GFLOP per sample "
          f"(train step), {achieved:.3g} TFLOP/s per device, MFU {mfu}", flush=True)
  if "test" in ferplus.available_splits(pathlib.Path(cli.expand_path(config.data.manual_dir))):
    config.data.eval_split = "test"
    test = cli.run("eval", config, workdir, checkpoint="latest")
    print(f"test accuracy {test['accuracy']:.4f} ({test['num_examples']} faces, final step)",
          flush=True)


def run_study(args, overrides: list[str]) -> None:
  """`--study`: the study of `args.study` at the paper's scale, for `args.budget_s` seconds."""
  import jax  # pylint: disable=g-import-not-at-top
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  from fer_jax import overrides as overrides_lib  # pylint: disable=g-import-not-at-top
  cli.setup_logging()
  spec = args.study if ":" in args.study else f"{args.study}:{'smoke' if args.smoke else 'paper'}"
  config = cli.load_config_file(spec)
  if args.smoke:  # one cell (A for the ablation), one seed
    config.data.manual_dir = str(ROOT / "tests" / "data" / "ferplus_sample")
    config.study.seeds = (0,)
    cells = slice(2, 3) if config.study.combine == "zip" else slice(0, 1)
    config.study.axes = tuple((key, tuple(values)[cells]) for key, values in config.study.axes)
    config.study.labels = tuple(config.study.labels)[cells]
  config.study.budget_s = float(args.budget_s)
  try:
    config = overrides_lib.apply_flags(config, overrides)
  except (KeyError, TypeError, ValueError) as e:
    raise SystemExit(f"gpu.py: error: bad --config override: {e}") from None
  workdir = args.workdir or ("/tmp/fer_gpu_study_smoke" if args.smoke else "/tmp/fer_gpu_study")
  if not jax.config.jax_compilation_cache_dir:  # the next call, and every seed, reuse it
    jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(workdir) / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  t0 = time.perf_counter()
  rows = cli.run("study", config, workdir)
  done = sum(r["status"] == "finished" for r in rows)
  devices = jax.devices()
  print(f"# {len(devices)} x {devices[0].device_kind}: {spec} in {workdir}: {done} of "
        f"{len(rows)} runs finished after {time.perf_counter() - t0:.0f} s"
        + ("" if done == len(rows) else "; the same command continues it"), flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--train", action="store_true", help="train the paper's recipe end to end")
  p.add_argument("--workdir", default="", help="--train: the run folder")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--size", type=int, default=112)
  p.add_argument("--depth", type=int, default=50)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--peak_tflops", type=float, default=0.0)
  p.add_argument("--smoke", action="store_true", help="tiny shapes, to check the script")
  p.add_argument("--study", default="", help="a study config to run at the paper's scale")
  p.add_argument("--budget_s", type=float, default=540.0,
                 help="--study: seconds of work per call (the study stops, saved, after them)")
  args, overrides = p.parse_known_args()
  if args.study:
    run_study(args, overrides)
    return
  if args.train:
    train_paper(args, overrides)
    return
  if overrides:
    p.error(f"unexpected arguments {overrides} (--config.* overrides go with --train)")
  if args.smoke:
    args.batch, args.size, args.depth, args.steps = 8, 32, 18, 2

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from fer_jax import parallel, state as state_lib  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import train  # pylint: disable=g-import-not-at-top
  from fer_jax.data import landmarks  # pylint: disable=g-import-not-at-top
  from fer_jax.models import lowering  # pylint: disable=g-import-not-at-top

  config = default.get_config()
  config.model.depth, config.model.dtype = args.depth, args.dtype
  config.data.crops.size = args.size
  config.batch_size = args.batch
  devices = jax.devices()
  mesh = parallel.make_mesh()
  platform = jax.default_backend()
  print(f"# {len(devices)} x {devices[0].device_kind} ({platform}), jax {jax.__version__}; "
        f"ResNet-{args.depth}, 5 branches of {args.size} px, {args.dtype}, global batch "
        f"{args.batch}; conv_impl={lowering.conv_impl_for(config.lowering, platform)}, "
        f"branch_axis={lowering.branch_axis_for(config.lowering, platform)}", flush=True)

  tx, lr = state_lib.make_optimizer(config, TRAIN_FACES // args.batch)
  state = train.init_state(config, mesh, tx)
  step = train.make_train_step(config, mesh, tx, lr)
  rng = np.random.default_rng(0)
  batch = parallel.global_batch(dict(
      image=rng.integers(0, 255, (args.batch, 48, 48, 1), dtype=np.uint8),
      landmarks=np.tile(landmarks.template_landmarks(48)[None], (args.batch, 1, 1)),
      index=np.arange(args.batch, dtype=np.int32),
      target=np.eye(8, dtype=np.float32)[rng.integers(0, 8, args.batch)]), mesh)

  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  first = None
  for _ in range(3):
    state, m = step(state, batch)
    first = float(m["loss"]) if first is None else first
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t0) / args.steps
  sps = args.batch / dt
  print(f"step {dt * 1e3:.1f} ms, {sps:,.0f} samples/s (a sample: one face, five crops); "
        f"compile {compile_s:.0f} s; loss {first:.3f} at the first step, {float(m['loss']):.3f} "
        f"after {args.steps + 3} steps on one repeated batch", flush=True)
  peak = peak_for(devices[0], args.dtype, args.peak_tflops)
  if flops:
    achieved = flops / dt / 1e12  # cost analysis counts the whole (per-device) program
    per_sample = flops / (args.batch / len(devices)) / 1e9
    mfu = f"{100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s" if peak else "peak unknown"
    print(f"model FLOPs {per_sample:.2f} GFLOP per sample (train step), {achieved:.3g} "
          f"TFLOP/s per device, MFU {mfu}", flush=True)
  hours = TRAIN_FACES * EPOCHS / sps / 3600
  print(f"the paper's recipe ({EPOCHS} epochs of {TRAIN_FACES:,} faces) would take "
        f"{hours:.2f} h at this rate ({hours * 60 / EPOCHS:.1f} min per epoch, evaluation "
        f"excluded)", flush=True)


if __name__ == "__main__":
  main()
