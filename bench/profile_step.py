"""Where fer_jax's CPU training step spends its time: XLA op time by kind, from a profile.

    python bench/profile_step.py --shape=resnet18:64 --impls=matmul,shifted

Runs `train_step.jax_step` (batch 32, imagenet stem, crops given, as `bench/train_step.py`),
warms it up, traces `--steps` steps with `jax.profiler`, converts the trace with xprof and
sums the duration of each XLA op kind (`ynn_fusion` = YNNPACK GEMMs and convolutions,
`concatenate` = im2col columns, ...) per step. Op times can overlap on the two threads, so
their sum may differ from the step time printed beside it.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def op_times(trace_dir: str, steps: int) -> tuple[collections.Counter, collections.Counter, float]:
  """(ms per step by op kind, op count per step by kind, step wall ms) from an xplane trace."""
  from xprof.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
  data, _ = raw_to_tool_data.xspace_to_tool_data([path], "trace_viewer", {})
  ms, count, step_ms = collections.Counter(), collections.Counter(), 0.0
  for event in json.loads(data).get("traceEvents", []):
    if event.get("ph") != "X" or "dur" not in event:
      continue
    name = event["name"]
    if name == "ThunkExecutor::Execute (wait for completion)":
      step_ms += event["dur"] / 1e3 / steps
    if name.startswith(("$", "Thread", "ThunkExecutor")):
      continue
    kind = re.sub(r"\.\d+$", "", name)
    ms[kind] += event["dur"] / 1e3 / steps
    count[kind] += 1
  return ms, count, step_ms


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--shape", default="resnet18:64")
  p.add_argument("--impls", default="matmul,shifted")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--stem", default="imagenet")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--top", type=int, default=10)
  args = p.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  import train_step  # pylint: disable=g-import-not-at-top
  depth, size = train_step.parse_shape(args.shape)
  for impl in args.impls.split(","):
    run, block, info = train_step.jax_step(depth, size, args.batch, args.stem,
                                           {"lowering.conv_impl": impl})
    for _ in range(3):
      block(run())
    with tempfile.TemporaryDirectory() as trace_dir:
      jax.profiler.start_trace(trace_dir)
      for _ in range(args.steps):
        metrics = run()
      block(metrics)
      jax.profiler.stop_trace()
      ms, count, step_ms = op_times(trace_dir, args.steps)
    print(f"{args.shape} conv_impl={impl} ({info['branch_axis']}): step {step_ms:.0f} ms, "
          f"sum of op times {sum(ms.values()):.0f} ms", flush=True)
    for kind, t in ms.most_common(args.top):
      print(f"  {t:7.1f} ms  {count[kind] // args.steps:4d} ops  {kind}", flush=True)


if __name__ == "__main__":
  main()
