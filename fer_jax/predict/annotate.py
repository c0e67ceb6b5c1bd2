"""Drawing predictions onto frames (OpenCV, BGR uint8): a box per face, its label with the
probability, and a small bar chart of the branch weights next to the face; and blurring faces
out of a frame (`blur_boxes`)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# One colour (BGR) per FERPlus class, in `labels.CLASS_NAMES` order.
CLASS_COLOURS = ((200, 200, 200), (0, 200, 255), (255, 200, 0), (255, 90, 40), (40, 40, 230),
                 (40, 160, 40), (200, 60, 200), (120, 120, 255))
EDGE_COLOUR = (0, 140, 255)


def _font_scale(frame_shape) -> float:
  return float(np.clip(min(frame_shape[:2]) / 900.0, 0.35, 0.9))


def _clip_box(box, shape) -> tuple[int, int, int, int]:
  h, w = shape[:2]
  x0, y0, x1, y1 = [int(round(v)) for v in box]
  return (min(max(x0, 0), w - 1), min(max(y0, 0), h - 1), min(max(x1, 0), w - 1),
          min(max(y1, 0), h - 1))


def _label(image: np.ndarray, text: str, x: int, y: int, colour, scale: float) -> None:
  """Text on a filled box whose bottom-left corner is (x, y), kept inside the image."""
  thick = max(1, int(round(scale * 2)))
  (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
  h, w = image.shape[:2]
  x = int(np.clip(x, 0, max(w - tw - 4, 0)))
  y = int(np.clip(y, th + base + 2, h - 1))
  cv2.rectangle(image, (x, y - th - base - 2), (x + tw + 4, y), colour, -1)
  cv2.putText(image, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
              cv2.LINE_AA)


def weight_bars(image: np.ndarray, weights: Sequence[float], names: Sequence[str], box,
                colour) -> None:
  """A bar per branch weight (0..1), in a panel beside `box` (right of it, else left)."""
  h, w = image.shape[:2]
  x0, y0, x1, y1 = _clip_box(box, image.shape)
  n = len(weights)
  ph = int(np.clip((y1 - y0) * 0.8, 30, 90))
  bw = max(ph // 8, 4)
  pw = n * (bw + 2) + 4
  px = x1 + 4 if x1 + 4 + pw < w else max(x0 - 4 - pw, 0)
  py = int(np.clip(y0, 0, max(h - ph, 0)))
  roi = image[py:py + ph, px:px + pw]
  roi[:] = (roi.astype(np.uint16) // 3).astype(np.uint8)  # darken the panel's background
  cv2.rectangle(image, (px, py), (px + pw - 1, py + ph - 1), colour, 1)
  scale = max(bw / 22.0, 0.25)
  text_h = int(round(12 * scale / 0.5)) + 2
  top, bottom = py + 3, py + ph - text_h - 2
  for i, (mu, name) in enumerate(zip(weights, names)):
    bx = px + 3 + i * (bw + 2)
    height = int(round(float(np.clip(mu, 0, 1)) * max(bottom - top, 1)))
    cv2.rectangle(image, (bx, bottom - height), (bx + bw - 1, bottom), colour, -1)
    cv2.putText(image, name[:1], (bx, py + ph - 3), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)


def blur_boxes(frame: np.ndarray, boxes: Sequence, grow: float = 0.2, cells: int = 6
               ) -> np.ndarray:
  """A copy of `frame` with each box (x0, y0, x1, y1), grown by `grow` of its width and height
  on every side, blurred beyond recognition: the region is shrunk to `cells` pixels across its
  shorter side (area averaging) and scaled back up (bilinear), so that no detail finer than
  about a sixth of the face is left."""
  out = np.ascontiguousarray(frame.copy())
  h, w = out.shape[:2]
  for box in boxes:
    x0, y0, x1, y1 = [float(v) for v in box]
    dx, dy = grow * (x1 - x0), grow * (y1 - y0)
    x0, y0 = max(int(np.floor(x0 - dx)), 0), max(int(np.floor(y0 - dy)), 0)
    x1, y1 = min(int(np.ceil(x1 + dx)), w), min(int(np.ceil(y1 + dy)), h)
    if x1 - x0 < 2 or y1 - y0 < 2:
      continue
    region = out[y0:y1, x0:x1]
    scale = cells / min(x1 - x0, y1 - y0)
    small = cv2.resize(region, (max(int(round((x1 - x0) * scale)), 1),
                                max(int(round((y1 - y0) * scale)), 1)),
                       interpolation=cv2.INTER_AREA)
    out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
  return out


DOT = np.array([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)])  # a dot: a pixel and its 4 neighbours


def dots(image: np.ndarray, points, colour) -> None:
  """Draws (x, y) points as small dots, in place (one vectorised write, not a call per point)."""
  p = np.rint(np.asarray(points, np.float64)).astype(np.int64)
  p = (p[:, None, :] + DOT[None]).reshape(-1, 2)
  h, w = image.shape[:2]
  p = p[(p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)]
  image[p[:, 1], p[:, 0]] = colour


def draw_faces(frame: np.ndarray, faces: Sequence[dict], branch_names: Sequence[str],
               class_names: Sequence[str]) -> np.ndarray:
  """A copy of `frame` (BGR uint8) with each face drawn.

  Each face dict holds `box` (x0, y0, x1, y1), `label_index`, `prob`, `weights` (one per branch)
  and optionally `track`, `landmarks` [68, 2] and `edge`.
  """
  out = np.ascontiguousarray(frame.copy())
  scale = _font_scale(out.shape)
  for face in faces:
    colour = CLASS_COLOURS[int(face["label_index"]) % len(CLASS_COLOURS)]
    x0, y0, x1, y1 = _clip_box(face["box"], out.shape)
    cv2.rectangle(out, (x0, y0), (x1, y1), EDGE_COLOUR if face.get("edge") else colour,
                  max(1, int(round(scale * 3))))
    if face.get("landmarks") is not None and (x1 - x0) >= 60:
      dots(out, face["landmarks"], colour)
    text = f"{class_names[int(face['label_index'])]} {face['prob']:.2f}"
    if face.get("track") is not None:
      text = f"#{face['track']} " + text
    if face.get("edge"):
      text += " (edge)"
    _label(out, text, x0, y0 - 2, colour, scale)
    if len(branch_names) > 1:  # one network on the whole face has no weights to show
      weight_bars(out, face["weights"], branch_names, face["box"], colour)
  return out


def no_face(frame: np.ndarray) -> np.ndarray:
  """A copy of `frame` marked as holding no face."""
  out = np.ascontiguousarray(frame.copy())
  _label(out, "no face", 4, 4 + 30, (200, 200, 200), _font_scale(out.shape))
  return out
