"""Derives the FERPlus mean landmark template from real faces with dlib.

    python scripts/derive_template.py --manual_dir=../shared/data/ferplus --num_images=5000

Fits dlib's 68-point predictor on each aligned 48x48 face (whole frame as the face box, 4x
upscaled), takes the per-point median shape, drops faces whose mean deviation from it exceeds
--max_deviation of the face size (where the predictor lost the face), and writes the mean of the
rest in unit coordinates ((x + 0.5) / size) to fer_jax/data/assets/ferplus_template.json.
"""

import json
import pathlib
import sys

from absl import app, flags
import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fer_jax.data import landmarks  # pylint: disable=g-import-not-at-top

_MANUAL_DIR = flags.DEFINE_string("manual_dir", "../shared/data/ferplus", "FERPlus folders.")
_NUM = flags.DEFINE_integer("num_images", 5000, "How many training faces to fit.")
_MAX_DEV = flags.DEFINE_float("max_deviation", 0.15, "Outlier cut, fraction of the face size.")
_OUT = flags.DEFINE_string("out", str(landmarks.TEMPLATE_PATH), "Where to write the template.")


def main(_):
  folder = pathlib.Path(_MANUAL_DIR.value) / "FER2013Train"
  files = sorted(folder.glob("*.png"))[:_NUM.value]
  if not files:
    raise SystemExit(f"no PNGs in {folder}")
  source = landmarks.DlibSource()
  shapes, size = [], None
  for f in files:
    img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
    if img is None:
      continue
    size = img.shape[0]
    shapes.append(source.fit(img))
  shapes = np.stack(shapes).astype(np.float64)
  median = np.median(shapes, axis=0)
  dev = np.linalg.norm(shapes - median, axis=-1).mean(-1) / size
  kept = shapes[dev <= _MAX_DEV.value]
  unit = (kept.mean(0) + 0.5) / size
  out = dict(
      points=np.round(unit, 5).tolist(), layout="iBUG 68, (x, y), unit coordinates (x+0.5)/size",
      source=f"dlib 68-point predictor on {len(shapes)} FERPlus training faces "
             f"({files[0].name} .. {files[-1].name}), {len(kept)} kept within "
             f"{_MAX_DEV.value} of the median shape",
      face_size=size, fitted=len(shapes), kept=len(kept),
      mean_deviation_px=float(np.linalg.norm(kept - kept.mean(0), axis=-1).mean()))
  pathlib.Path(_OUT.value).write_text(json.dumps(out, indent=1))
  print(f"fitted {len(shapes)} faces, kept {len(kept)}; mean deviation of kept faces from the "
        f"template {out['mean_deviation_px']:.2f} px; wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
