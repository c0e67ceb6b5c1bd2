"""Face finding: recall, false positives and time of each detector (`fer_jax.predict.detectors`).

    python bench/detect.py [--frames=20] [--seed=0] [--detectors=hog,hog_up1,...]
    python bench/detect.py --detectors=hog,blazeface,blazeface@min_score=0.3   # options
    python bench/detect.py --large_photo=5   # 6000x4000 photos: predict's relative minimum

Synthetic classroom frames, 1280x720, seeded: a background without faces (smooth colour noise,
a gradient, random rectangles and lines, grain) and 10-40 FERPlus validation faces (images
without a not-a-face vote), each at a face width drawn from one of three bands, 24-48, 48-80
and 80-120 px, band first, uniformly. A FERPlus face is a tight 48 px grey crop; it is pasted
with a context margin of a sixth of its width on each side (its border pixels replicated,
faded into the background), tinted with a random skin tone, and resized. The face width is the
crop's side. Detectors box a face more tightly than FERPlus crops it (all of them: about 0.85-0.9
of the crop's side, see the geometry lines), so a true face box is the crop's box moved and
shrunk onto dlib's convention (`FACE_IN_CROP`); recall against the crop box is printed too.

Per detector: recall at IoU 0.5 per width band and overall (detections matched greedily,
highest score first), false positives per frame (detections matched to no face; in brackets
those on the background, overlapping no face at IoU 0.1: the others are faces boxed too loosely
or twice), and time per frame: wall clock and the process's CPU time (threads summed; CPU time
does not count waiting for a busy machine). Detectors run in turn on each frame, their order
rotating, so a change in the machine's load falls on all of them; ratios are against `hog`
measured in the same run. Detectors in `--slow` run on the first `--slow_frames` frames only
(their row says how many).

Then each detector on the committed photos (tests/data/photos): its boxes, and their IoU with
dlib HOG's box at one upsampling (the box tests/data/photos/README.md documents).
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from fer_jax.predict import detectors  # pylint: disable=g-import-not-at-top

PHOTOS = ROOT / "tests" / "data" / "photos"
PHOTO_BOXES = {"astronaut.png": (129, 55, 204, 130), "grace_hopper.jpg": (180, 139, 366, 325)}
BANDS = ((24, 48), (48, 80), (80, 120))
WIDTH, HEIGHT = 1280, 720
MARGIN = 1 / 6  # context pasted around a face, per side, as a fraction of its width
# dlib's face box inside a FERPlus crop: centre offset (dx, dy) and side, as fractions of the
# crop's side; medians of dlib HOG's boxes (upsample 1) over 128 faces of calibration frames
# (`--seed=1`, 8 frames), not the frames of the table (seed 0).
FACE_IN_CROP = dict(dx=-0.01, dy=0.06, side=0.89)


def ferplus_faces(ferplus_dir: pathlib.Path) -> list[pathlib.Path]:
  """FER2013Valid PNGs that no annotator called not-a-face (label.csv's last column)."""
  folder = ferplus_dir / "FER2013Valid"
  if not (folder / "label.csv").exists():
    raise FileNotFoundError(f"no FERPlus validation faces at {folder} (give --ferplus_dir)")
  with open(folder / "label.csv", newline="") as f:
    return [folder / row[0] for row in csv.reader(f) if row and int(row[-1]) == 0]


def background(rng: np.random.Generator) -> np.ndarray:
  """A 1280x720 RGB frame with no face: smooth noise, a gradient, rectangles, lines, grain."""
  low = rng.uniform(40, 220, (rng.integers(3, 10), rng.integers(5, 16), 3)).astype(np.float32)
  frame = cv2.resize(low, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
  ramp = np.linspace(-1, 1, WIDTH if rng.random() < 0.5 else HEIGHT, dtype=np.float32)
  frame += (ramp[None, :, None] if len(ramp) == WIDTH else ramp[:, None, None]) * rng.uniform(
      -40, 40, 3).astype(np.float32)
  frame = np.clip(frame, 0, 255).astype(np.uint8)
  for _ in range(rng.integers(5, 30)):
    x0, y0 = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
    x1, y1 = x0 + int(rng.integers(10, 400)), y0 + int(rng.integers(10, 300))
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    cv2.rectangle(frame, (x0, y0), (x1, y1), color, -1 if rng.random() < 0.6 else 3)
  for _ in range(rng.integers(5, 20)):
    p = [tuple(int(v) for v in rng.integers(0, (WIDTH, HEIGHT))) for _ in range(2)]
    cv2.line(frame, p[0], p[1], tuple(int(c) for c in rng.integers(0, 256, 3)),
             int(rng.integers(1, 6)))
  grain = rng.normal(0, 4, frame.shape)
  return np.clip(frame + grain, 0, 255).astype(np.uint8)


def paste(frame: np.ndarray, face: np.ndarray, x: int, y: int, width: int,
          rng: np.random.Generator):
  """Pastes a 48 px grey face so that its crop covers [x, x + width) x [y, y + width)."""
  m = int(round(MARGIN * face.shape[0]))
  padded = cv2.copyMakeBorder(face, m, m, m, m, cv2.BORDER_REPLICATE).astype(np.float32)
  ramp = np.clip(np.minimum(np.arange(padded.shape[0]), np.arange(padded.shape[0])[::-1]) / m,
                 0, 1)  # 1 over the crop, fading to 0 at the margin's outer edge
  alpha = np.minimum(ramp[:, None], ramp[None, :])
  tone = rng.uniform((0.95, 0.7, 0.55), (1.0, 0.85, 0.75)).astype(np.float32)
  rgb = padded[..., None] * tone / tone.max()
  side = int(round(width * padded.shape[0] / face.shape[0]))
  o = int(round(width * m / face.shape[0]))
  rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA if side < padded.shape[0]
                   else cv2.INTER_CUBIC)
  alpha = cv2.resize(alpha.astype(np.float32), (side, side))[..., None]
  x0, y0 = x - o, y - o
  region = frame[y0:y0 + side, x0:x0 + side].astype(np.float32)
  frame[y0:y0 + side, x0:x0 + side] = np.clip(alpha * rgb + (1 - alpha) * region, 0,
                                              255).astype(np.uint8)


def classroom(faces: list[pathlib.Path], seed: int, index: int
              ) -> tuple[np.ndarray, np.ndarray]:
  """Frame `index` of seed `seed`: (RGB frame, true boxes [n, 4] x0, y0, x1, y1)."""
  rng = np.random.default_rng([seed, index])
  frame = background(rng)
  taken, boxes = [], []
  for path in rng.choice(faces, int(rng.integers(10, 41)), replace=False):
    lo, hi = BANDS[rng.integers(len(BANDS))]
    width = int(rng.integers(lo, hi + 1))
    o = int(np.ceil(width * MARGIN)) + 2
    for _ in range(100):  # a place whose padded square meets no other
      x = int(rng.integers(o, WIDTH - width - o))
      y = int(rng.integers(o, HEIGHT - width - o))
      sq = (x - o, y - o, x + width + o, y + width + o)
      if all(sq[2] <= t[0] or t[2] <= sq[0] or sq[3] <= t[1] or t[3] <= sq[1] for t in taken):
        break
    else:
      continue
    face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    paste(frame, face, x, y, width, rng)
    taken.append(sq)
    boxes.append((x, y, x + width, y + width))
  return frame, np.array(boxes, np.float32).reshape(-1, 4)


def face_boxes(crops: np.ndarray) -> np.ndarray:
  """The true face boxes, in dlib's convention, of FERPlus crops pasted at `crops`."""
  side = crops[:, 2:3] - crops[:, 0:1]
  c = (crops[:, :2] + crops[:, 2:]) / 2 + side * [FACE_IN_CROP["dx"], FACE_IN_CROP["dy"]]
  half = side * FACE_IN_CROP["side"] / 2
  return np.concatenate([c - half, c + half], 1).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  lo = np.maximum(a[:, None, :2], b[None, :, :2])
  hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), -1)
  area = lambda x: np.prod(x[:, 2:] - x[:, :2], -1)
  return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def match(dets: list, truth: np.ndarray, threshold: float = 0.5):
  """Greedy, highest score first: (hit per true box, false positives, false positives on the
  background: IoU under 0.1 with every true box)."""
  hit = np.zeros(len(truth), bool)
  if not dets or not len(truth):
    return hit, len(dets), len(dets)
  iou = iou_matrix(np.stack([d[0] for d in dets]), truth)
  fp = fp_bg = 0
  for i in np.argsort([-d[1] for d in dets]):
    cand = np.where(~hit, iou[i], -1)
    j = int(cand.argmax())
    if cand[j] >= threshold:
      hit[j] = True
    else:
      fp += 1
      fp_bg += int(iou[i].max() < 0.1)
  return hit, fp, fp_bg


def geometry(dets: list, truth: np.ndarray) -> list[tuple[float, float, float]]:
  """Per true box overlapped (IoU >= 0.3) by a detection: its best detection's centre offset
  (dx, dy) and side, over the true box's side."""
  if not dets or not len(truth):
    return []
  boxes = np.stack([d[0] for d in dets])
  iou = iou_matrix(boxes, truth)
  out = []
  for j in range(len(truth)):
    i = int(iou[:, j].argmax())
    if iou[i, j] >= 0.3:
      t, b = truth[j], boxes[i]
      side = t[2] - t[0]
      out.append((((b[0] + b[2]) - (t[0] + t[2])) / 2 / side,
                  ((b[1] + b[3]) - (t[1] + t[3])) / 2 / side,
                  np.sqrt((b[2] - b[0]) * (b[3] - b[1])) / side))
  return out


def large_photo(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A 6000x4000 RGB photo of one face (tests/data/photos/grace_hopper.jpg at 3x, about 560
  px) on a dark, grainy, graded background under a bright band (the kind of scene where
  BlazeFace's finest tiles found faces that are not there), and the face's box."""
  rng = np.random.default_rng(seed)
  h, w = 4000, 6000
  grain = rng.normal(0, 6, (h, w, 3)) + np.linspace(0, 40, w)[None, :, None] + 28
  photo = np.clip(grain, 0, 255).astype(np.uint8)
  photo[:300] = 200
  face = cv2.imread(str(PHOTOS / "grace_hopper.jpg"))
  face = cv2.resize(face, (face.shape[1] * 3, face.shape[0] * 3))
  y, x = int(rng.integers(300, h - face.shape[0])), int(rng.integers(0, w - face.shape[1]))
  photo[y:y + face.shape[0], x:x + face.shape[1]] = face
  box = np.array(PHOTO_BOXES["grace_hopper.jpg"], np.float32) * 3 + [x, y, x, y]
  return photo[:, :, ::-1].copy(), box[None]


def large_photos(count: int) -> None:
  """`--large_photo`: BlazeFace at 24 px everywhere against predict's default, which sizes the
  finest tiles (and drops boxes) at 1% of the shorter side where that is more (40 px here)."""
  from fer_jax import defaults  # pylint: disable=g-import-not-at-top
  fraction = defaults.get_config().predict.min_face_fraction
  made = {"min_face=24": (detectors.blazeface(min_face=24, threads=2), 24.0),
          f"min_face_fraction={fraction}": (
              detectors.blazeface(min_face=24, threads=2, min_face_fraction=fraction),
              fraction * 4000)}
  print(f"{count} synthetic 6000x4000 photos, one face each (seeds 0-{count - 1})")
  print("\n| blazeface | found | false per photo | false scores | s per photo |")
  print("|---|---|---|---|---|")
  for name, (detect, smallest) in made.items():
    found, false, scores, seconds = 0, 0, [], 0.0
    for seed in range(count):
      photo, truth = large_photo(seed)
      t = time.perf_counter()
      dets = [d for d in detect(photo) if min(d[0][2:] - d[0][:2]) >= smallest]
      seconds += time.perf_counter() - t
      hit, fp, _ = match(dets, truth)
      found += int(hit.sum())
      false += fp
      scores += [round(float(s), 2) for b, s in dets
                 if iou_matrix(np.asarray([b]), truth).max() < 0.5]
    print(f"| {name} | {found}/{count} | {false / count:.2f} | {scores} | "
          f"{seconds / count:.2f} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--large_photo", type=int, default=0,
                      help="instead: N synthetic 6000x4000 photos (large_photos)")
  parser.add_argument("--frames", type=int, default=20)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--detectors", default=",".join(detectors.DETECTORS),
                      help="names of fer_jax.predict.detectors, each with @key=value options if any")
  parser.add_argument("--slow", default="mmod,mmod_up1",
                      help="detectors that run on the first --slow_frames frames only")
  parser.add_argument("--slow_frames", type=int, default=2)
  parser.add_argument("--ferplus_dir", default=str(ROOT.parent / "shared" / "data" / "ferplus"))
  args = parser.parse_args()
  if args.large_photo:
    return large_photos(args.large_photo)

  names = [n for n in args.detectors.split(",") if n]
  slow = set(args.slow.split(","))
  made, skipped = {}, {}
  for name in names:
    base, *opts = name.split("@")  # name@key=value@...: options of make_detector
    opts = dict(o.split("=", 1) for o in opts)
    try:
      made[name] = detectors.make_detector(base, **{
          k: int(v) if v.isdigit() else float(v) for k, v in opts.items()})
    except detectors.DetectorUnavailable as e:
      skipped[name] = str(e)
  for name, why in skipped.items():
    print(f"skipped {name}: {why}")
  if "hog" not in made:
    raise SystemExit("the reference detector 'hog' is needed for the ratios")
  faces = ferplus_faces(pathlib.Path(args.ferplus_dir))
  print(f"machine: {os.cpu_count()} CPU cores, niceness {os.nice(0)}; {args.frames} frames "
        f"{WIDTH}x{HEIGHT}, seed {args.seed}, {len(faces)} FERPlus validation faces to draw from")

  names = list(made)
  stats = {n: dict(frames=0, hits=np.zeros(len(BANDS)), faces=np.zeros(len(BANDS)), crop_hits=0,
                   fp=0, fp_bg=0, wall=0.0, cpu=0.0, geo=[]) for n in names}
  for k in range(args.frames):
    frame, crops = classroom(faces, args.seed, k)
    truth = face_boxes(crops)
    band = np.searchsorted([b[1] for b in BANDS[:-1]], crops[:, 2] - crops[:, 0], side="right")
    order = names[k % len(names):] + names[:k % len(names)]
    for name in order:
      if name in slow and k >= args.slow_frames:
        continue
      wall, cpu = time.perf_counter(), time.process_time()
      dets = made[name](frame)
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      hit, fp, fp_bg = match(dets, truth)
      s = stats[name]
      s["frames"] += 1
      s["wall"] += wall
      s["cpu"] += cpu
      s["fp"] += fp
      s["fp_bg"] += fp_bg
      s["hits"] += np.bincount(band[hit], minlength=len(BANDS))
      s["faces"] += np.bincount(band, minlength=len(BANDS))
      s["crop_hits"] += int(match(dets, crops)[0].sum())
      s["geo"] += geometry(dets, crops)
    print(f"frame {k}: {len(truth)} faces; " + ", ".join(
        f"{n} {stats[n]['hits'].sum():.0f}/{stats[n]['faces'].sum():.0f}" for n in names),
          flush=True)

  ref = stats["hog"]
  ref_wall, ref_cpu = ref["wall"] / ref["frames"], ref["cpu"] / ref["frames"]
  print("\nrecall at IoU 0.5 with the face box (dlib's convention), by face width in px, and "
        "overall; overall with the 48 px crop box; false positives per frame (on background)")
  print("\n| detector | frames | faces | 24-48 | 48-80 | 80-120 | overall | overall, crop box "
        "| FP/frame (bg) | wall ms/frame | CPU ms/frame | CPU vs hog | wall vs hog |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name in names:
    s = stats[name]
    n = s["faces"].sum()
    rec = " | ".join(f"{h / f:.2f}" if f else "-" for h, f in zip(s["hits"], s["faces"]))
    wall, cpu = s["wall"] / s["frames"], s["cpu"] / s["frames"]
    print(f"| {name} | {s['frames']} | {n:.0f} | {rec} | {s['hits'].sum() / n:.3f} | "
          f"{s['crop_hits'] / n:.3f} | {s['fp'] / s['frames']:.2f} "
          f"({s['fp_bg'] / s['frames']:.2f}) | {1000 * wall:.0f} | {1000 * cpu:.0f} | "
          f"{cpu / ref_cpu:.2f} | {wall / ref_wall:.2f} |")
  print("\nbox geometry in the 48 px crop, medians over faces a detection overlaps at IoU >= 0.3: "
        "centre offset dx, dy and side, as fractions of the crop's side")
  for name in names:
    g = np.array(stats[name]["geo"]).reshape(-1, 3)
    med = np.median(g, 0) if len(g) else [np.nan] * 3
    print(f"  {name}: {len(g)} faces, dx {med[0]:+.3f} dy {med[1]:+.3f} side {med[2]:.3f}")

  print("\nphotos (tests/data/photos): detections, and IoU with dlib HOG's box at upsample 1")
  for photo, ref_box in PHOTO_BOXES.items():
    rgb = cv2.cvtColor(cv2.imread(str(PHOTOS / photo)), cv2.COLOR_BGR2RGB)
    for name in names:
      dets = made[name](rgb)
      ious = iou_matrix(np.stack([d[0] for d in dets]), np.array([ref_box], np.float32))[:, 0] \
          if dets else []
      print(f"  {photo} {name}: {len(dets)} found: " + "; ".join(
          f"{np.round(d[0]).astype(int).tolist()} score {d[1]:.2f} IoU {v:.2f}"
          for d, v in zip(dets, ious)))


if __name__ == "__main__":
  main()
