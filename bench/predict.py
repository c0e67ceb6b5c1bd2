"""Prediction speed on this machine: model-only faces/s and end-to-end frames/s.

    python bench/predict.py --config=configs/cpu.py              # a freshly initialised model
    python bench/predict.py --workdir=/tmp/fer_cpu [--checkpoint=best]   # a trained run

The frame is 1280x720 with 20 faces: resized copies of the two test photos' faces
(tests/data/photos), tiled 5 x 4 on a grey background.

- model only: the evaluation crops and the jitted forward pass (`predict.make_classifier`) on
  faces that are already aligned, in batches of `--batch_size`;
- end to end: detection, landmarks, alignment, crops, the model and annotation, per frame,
  as `--mode=predict` runs them (without the file writes).

Each measurement is timed after one untimed warm-up call (compilation), with wall-clock time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from fer_jax import annotate, predict, state as state_lib  # pylint: disable=g-import-not-at-top
from fer_jax.data import labels, landmarks  # pylint: disable=g-import-not-at-top
from fer_jax.models import lowering  # pylint: disable=g-import-not-at-top

PHOTOS = ROOT / "tests" / "data" / "photos"
# dlib's face boxes in the two photos (x0, y0, x1, y1).
FACE_BOXES = {"astronaut.png": (129, 55, 204, 130), "grace_hopper.jpg": (180, 139, 366, 325)}


def head(name: str, size: int) -> np.ndarray:
  """A size x size BGR patch around the face of a test photo (the face about 60% of it)."""
  img = cv2.imread(str(PHOTOS / name))
  if img is None:
    raise FileNotFoundError(f"test photo {PHOTOS / name} is missing")
  x0, y0, x1, y1 = FACE_BOXES[name]
  cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * (x1 - x0)
  s = size / (2 * half)
  m = np.float32([[s, 0, -(cx - half) * s], [0, s, -(cy - half) * s]])
  return cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REPLICATE)


def classroom_frame(width: int = 1280, height: int = 720, cols: int = 5, rows: int = 4
                    ) -> np.ndarray:
  """A grey BGR frame with cols x rows faces, the two photos alternating, sizes varying."""
  frame = np.full((height, width, 3), 110, np.uint8)
  cw, ch = width // cols, height // rows
  names = sorted(FACE_BOXES)
  for r in range(rows):
    for c in range(cols):
      size = int(min(cw, ch) * (0.8 + 0.2 * ((r + c) % 2)))
      patch = head(names[(r + c) % 2], size)
      y, x = r * ch + (ch - size) // 2, c * cw + (cw - size) // 2
      frame[y:y + size, x:x + size] = patch
  return frame


def load_config(path: str):
  spec = importlib.util.spec_from_file_location("bench_config", path)
  if spec is None or not pathlib.Path(path).exists():
    raise FileNotFoundError(f"config file {path} does not exist")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def model_for(args):
  """(config, variables, a description of where the model came from)."""
  if args.workdir:
    config, variables, step = predict.load_checkpoint(args.workdir, args.checkpoint)
    return config, variables, f"checkpoint step {step} of {args.workdir}"
  config = load_config(args.config)
  model = state_lib.build_model(config)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros(state_lib.input_shape(config, 2)),
                                           train=False))(jax.random.key(config.seed))
  return config, variables, f"a freshly initialised model of {args.config} (untrained weights)"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="", help="a training run to restore (else --config)")
  parser.add_argument("--checkpoint", default="latest")
  parser.add_argument("--config", default=str(ROOT / "configs" / "cpu.py"),
                      help="the config of a freshly initialised model when --workdir is not set")
  parser.add_argument("--landmarks", default="face_alignment",
                      help="face_alignment (dlib when its weights are absent) or dlib")
  parser.add_argument("--upsample", type=int, default=1, help="dlib detector upsampling")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--model_batches", type=int, default=8, help="timed model-only batches")
  parser.add_argument("--frames", type=int, default=5, help="timed end-to-end frames")
  args = parser.parse_args()

  config, variables, origin = model_for(args)
  source = landmarks.best_available(args.landmarks, upsample=args.upsample)
  classify = predict.make_classifier(config, variables, args.batch_size)
  branch_names = list(config.data.crops.branches)
  class_names = list(labels.CLASS_NAMES)
  frame = classroom_frame()
  rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
  m = config.model
  conv_impl = lowering.conv_impl_for(config.lowering, jax.default_backend())
  print(f"machine: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPU cores")
  print(f"model: {origin}: ResNet-{m.depth} width {m.width}, {len(branch_names)} branches of "
        f"{config.data.crops.size} px, conv {conv_impl}")
  print(f"landmarks: {source.name} (asked for {args.landmarks}), detector upsample "
        f"{args.upsample}; frame 1280x720 with 20 faces; batch {args.batch_size}")

  # Model only: crops + forward on aligned faces.
  faces = predict.find_faces(source, rgb, max_faces=30)
  print(f"faces found in the frame: {len(faces)} of 20")
  if not faces:
    raise SystemExit("no face found; cannot benchmark")
  n = args.batch_size * args.model_batches
  pick = np.arange(n) % len(faces)
  images = np.stack([faces[i].aligned for i in pick])
  pts = np.stack([faces[i].aligned_landmarks for i in pick])
  classify(images[:args.batch_size], pts[:args.batch_size], np.arange(args.batch_size))
  t = time.perf_counter()
  classify(images, pts, np.arange(n))
  model_s = time.perf_counter() - t
  print(f"model only (crops + jitted forward, {n} aligned faces): "
        f"{n / model_s:.1f} faces/s ({1000 * model_s / n:.2f} ms/face)")

  # End to end, per frame.
  stages = dict(detect_align=0.0, model=0.0, annotate=0.0)

  def one_frame(timed: bool):
    t0 = time.perf_counter()
    fs = predict.find_faces(source, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), max_faces=30)
    t1 = time.perf_counter()
    probs, mu = classify(np.stack([f.aligned for f in fs]),
                         np.stack([f.aligned_landmarks for f in fs]), np.arange(len(fs)))
    t2 = time.perf_counter()
    drawn = [dict(box=f.box, label_index=int(p.argmax()), prob=float(p.max()), weights=w,
                  landmarks=f.landmarks, edge=f.edge) for f, p, w in zip(fs, probs, mu)]
    annotate.draw_faces(frame, drawn, branch_names, class_names)
    t3 = time.perf_counter()
    if timed:
      stages["detect_align"] += t1 - t0
      stages["model"] += t2 - t1
      stages["annotate"] += t3 - t2

  one_frame(False)
  t = time.perf_counter()
  for _ in range(args.frames):
    one_frame(True)
  total = time.perf_counter() - t
  parts = ", ".join(f"{k} {1000 * v / args.frames:.0f} ms" for k, v in stages.items())
  print(f"end to end ({args.frames} frames): {args.frames / total:.2f} frames/s "
        f"({1000 * total / args.frames:.0f} ms/frame: {parts})")


if __name__ == "__main__":
  main()
