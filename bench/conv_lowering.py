"""Per-layer convolution lowerings on this machine: forward + both gradients of every distinct
convolution of a backbone, under each lowering (`fer_jax/models/lowering.py`), in one run.

    python bench/conv_lowering.py --depth=18 --size=64 --batch=160
    python bench/conv_lowering.py --depth=18 --size=40 --width=0.5 --stem=small_strided --batch=320

The batch counts images (faces x branches). For each distinct (map, channels, kernel, stride)
it prints ms per fwd+bwd under `xla`, `matmul` and `hybrid` (median of --reps after a warm-up),
the best, and how many times the backbone uses it; the last lines total the backbone under each
single lowering and under the per-layer best. This is how `lowering.CPU_CONV_IMPL` and
`lowering.small_map_pixels` were chosen.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def conv_shapes(depth: int, width: float, stem: str, size: int):
  """(H_in, Cin, Cout, kernel, stride) of every convolution of the backbone, in order, read
  off the model itself: each `lowering.Conv` call is intercepted while the ResNet is shaped."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from fer_jax.models import lowering, resnet  # pylint: disable=g-import-not-at-top
  out = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, lowering.Conv) and context.method_name == "__call__":
      m, x = context.module, args[0]
      out.append((x.shape[-3], x.shape[-1], m.features, m.kernel_size[0], m.strides[0]))
    return next_fun(*args, **kwargs)

  model = resnet.ResNet(depth=depth, width=width, stem=stem, conv=lowering.Conv)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda k: model.init(k, jax.numpy.zeros((1, size, size, 1)), train=False),
                   jax.random.key(0))
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--depth", type=int, default=18)
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--stem", default="imagenet")
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--batch", type=int, default=160)
  p.add_argument("--reps", type=int, default=5)
  p.add_argument("--impls", default="xla,matmul,hybrid")
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from fer_jax.models import lowering  # pylint: disable=g-import-not-at-top

  impls = args.impls.split(",")
  counts = collections.Counter(conv_shapes(args.depth, args.width, args.stem, args.size))
  print(f"# ResNet-{args.depth} width {args.width} {args.stem} stem at {args.size} px, "
        f"{args.batch} images; ms per forward + input and weight gradients", flush=True)
  print(f"{'map':>7} {'cin':>5} {'cout':>5} {'k':>2} {'s':>2} {'uses':>4}  " +
        "  ".join(f"{i:>8}" for i in impls) + "   best", flush=True)
  totals = collections.Counter()
  for (h, cin, cout, k, s), uses in counts.items():
    x = jax.random.normal(jax.random.key(0), (args.batch, h, h, cin))
    kern = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.05
    first = cin == 1  # the stem's input is the image: no input gradient, as in training
    times = {}
    for impl in impls:
      f = lambda x, kern, impl=impl: jnp.sum(lowering.conv(x, kern, (s, s), impl) ** 2)
      g = jax.jit(jax.grad(f, argnums=(1,) if first else (0, 1)))
      jax.block_until_ready(g(x, kern))
      reps = []
      for _ in range(args.reps):
        t0 = time.perf_counter()
        jax.block_until_ready(g(x, kern))
        reps.append((time.perf_counter() - t0) * 1e3)
      times[impl] = statistics.median(reps)
    best = min(times, key=times.get)
    for impl in impls:
      totals[impl] += uses * times[impl]
    totals["per-layer best"] += uses * times[best]
    print(f"{h:>4}x{h:<2} {cin:>5} {cout:>5} {k:>2} {s:>2} {uses:>4}  " +
          "  ".join(f"{times[i]:8.1f}" for i in impls) + f"   {best}", flush=True)
  for name, total in totals.items():
    print(f"backbone total, {name}: {total:.0f} ms", flush=True)


if __name__ == "__main__":
  main()
