"""fer_jax's CPU training step against a PyTorch reference of the same model, in one run.

    python bench/train_step.py                       # resnet18 48/64 px, resnet50 64 px, batch 32
    python bench/train_step.py --shapes=resnet18:64 --rounds=7

Both implementations train the same model (bench/torch_reference.py: shared ResNet over five
branches, attention weights, weighted-sum fusion, CE + constraint, SGD with momentum) on the same
random crops [32, 5, S, S, 1]; fer_jax runs its real step (`train.make_train_step`, crops given,
its config defaults for this platform). After warm-up the two alternate, `--steps` steps each per
round, and the median round gives samples/s (a sample is one face: five crops). Peak memory is
each implementation's peak resident memory in a fresh child process, over the process's
memory after imports.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def jax_step(depth: int, size: int, batch: int, stem: str, overrides: dict):
  """fer_jax's jitted train step on fixed crops: returns a function that runs one step."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from fer_jax import parallel, state as state_lib  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import train  # pylint: disable=g-import-not-at-top
  from fer_jax.models import lowering  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model.depth, config.model.stem, config.data.crops.size = depth, stem, size
  config.data.crops_on = "host"  # the step receives crops, as the reference does
  config.batch_size = batch
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = type(node[last])(value) if not isinstance(node[last], str) else value
  mesh = parallel.make_mesh()
  tx, lr = state_lib.make_optimizer(config, 100)
  state = train.init_state(config, mesh, tx)
  step = train.make_train_step(config, mesh, tx, lr)
  rng = np.random.default_rng(0)
  batch_np = dict(crops=rng.standard_normal((batch, 5, size, size, 1), np.float32),
                  target=np.eye(8, dtype=np.float32)[rng.integers(0, 8, batch)],
                  index=np.arange(batch, dtype=np.int32))
  inputs = parallel.global_batch(batch_np, mesh)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], inputs)
    return metrics

  def block(metrics):
    jax.block_until_ready(metrics)

  platform = jax.default_backend()
  return run, block, dict(conv_impl=lowering.conv_impl_for(config.lowering, platform),
                          branch_axis=lowering.branch_axis_for(config.lowering, platform))


def torch_step(depth: int, size: int, batch: int, stem: str, channels_last: bool):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torch_reference  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = torch_reference.BranchAttentionNet(depth=depth, stem=stem)
  step = torch_reference.make_step(model, channels_last=channels_last)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.standard_normal((batch, 5, size, size, 1), np.float32))
  y = torch.from_numpy(np.eye(8, dtype=np.float32)[rng.integers(0, 8, batch)])
  return (lambda: step(x, y)), (lambda _: None)


def time_steps(run, block, n: int) -> float:
  t0 = time.perf_counter()
  out = None
  for _ in range(n):
    out = run()
  block(out)
  return (time.perf_counter() - t0) / n


def parse_shape(text: str) -> tuple[int, int]:
  name, size = text.split(":")
  return int(name.replace("resnet", "")), int(size)


def _status_kib(field: str) -> int:
  """A /proc/self/status field in KiB. VmHWM, unlike ru_maxrss, is not inherited from the parent
  process across fork and exec."""
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")


def child(args) -> None:
  """Peak memory of one implementation alone: prints JSON."""
  depth, size = parse_shape(args.shapes)
  if args.child == "jax":
    import jax  # pylint: disable=g-import-not-at-top,unused-import
    import flax  # pylint: disable=g-import-not-at-top,unused-import
    base = _status_kib("VmRSS")
    run, block, _ = jax_step(depth, size, args.batch, args.stem, json.loads(args.overrides))
  else:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    base = _status_kib("VmRSS")
    run, block = torch_step(depth, size, args.batch, args.stem, args.channels_last)
  for _ in range(3):
    block(run())
  peak = _status_kib("VmHWM")
  print(json.dumps(dict(peak_mib=(peak - base) / 1024)))


def peak_memory(args, which: str, shape: str) -> float:
  cmd = [sys.executable, __file__, f"--child={which}", f"--shapes={shape}",
         f"--batch={args.batch}", f"--stem={args.stem}", f"--overrides={args.overrides}"]
  if args.channels_last:
    cmd.append("--channels_last")
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT)
  if out.returncode:
    raise RuntimeError(out.stderr[-2000:])
  return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shapes", default="resnet18:48,resnet18:64,resnet50:64")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--stem", default="imagenet")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=3, help="steps per implementation per round")
  p.add_argument("--channels_last", action="store_true", help="PyTorch in channels_last")
  p.add_argument("--overrides", default="{}", help='fer_jax config overrides as JSON, e.g. '
                 '\'{"lowering.conv_impl": "xla"}\'')
  p.add_argument("--no_memory", action="store_true")
  p.add_argument("--child", default="")
  args = p.parse_args()
  if args.child:
    return child(args)
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  print(f"# {os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), float32, batch "
        f"{args.batch} faces x 5 branches, {args.stem} stem, torch "
        f"{'channels_last' if args.channels_last else 'NCHW'}", flush=True)
  for shape in args.shapes.split(","):
    depth, size = parse_shape(shape)
    j_run, j_block, info = jax_step(depth, size, args.batch, args.stem, json.loads(args.overrides))
    t_run, t_block = torch_step(depth, size, args.batch, args.stem, args.channels_last)
    t0 = time.perf_counter()
    for _ in range(2):
      j_block(j_run())
    compile_s = time.perf_counter() - t0
    for _ in range(2):
      t_block(t_run())
    jt, tt = [], []
    for _ in range(args.rounds):
      jt.append(time_steps(j_run, j_block, args.steps))
      tt.append(time_steps(t_run, t_block, args.steps))
    j_sps = args.batch / statistics.median(jt)
    t_sps = args.batch / statistics.median(tt)
    print(f"resnet{depth} {size}px: fer_jax {j_sps:.1f} samples/s, pytorch {t_sps:.1f} "
          f"samples/s, ratio {j_sps / t_sps:.2f}", flush=True)
    detail = (f"  fer_jax: conv_impl={info['conv_impl']}, branch_axis={info['branch_axis']}, "
              f"compile+2 steps {compile_s:.1f}s; round spreads fer_jax "
              f"{min(jt) * 1e3:.0f}-{max(jt) * 1e3:.0f} ms, pytorch "
              f"{min(tt) * 1e3:.0f}-{max(tt) * 1e3:.0f} ms per step")
    print(detail, flush=True)
    if not args.no_memory:
      jm, tm = peak_memory(args, "jax", shape), peak_memory(args, "torch", shape)
      print(f"  peak memory: fer_jax {jm:.0f} MiB, pytorch {tm:.0f} MiB "
            f"(peak resident memory over imports, one process each)", flush=True)


if __name__ == "__main__":
  main()
