"""MTCNN (Zhang et al., 2016): three small networks in a cascade, for faces down to 12 px.

P-Net slides a 12 px window (stride 2) over a pyramid of the frame, scaled so that `min_face`
px faces fill the window; R-Net rescores its candidate boxes at 24 px, O-Net the survivors at
48 px; each stage regresses the box, and non-maximum suppression merges the boxes between
stages. The weights are the ones facenet-pytorch ships (`pnet.pt`, `rnet.pt`, `onet.pt`; its
package is read as files, never imported: its code imports torchvision), run here by torch on
the CPU (torch is already face-alignment's requirement).

Two choices follow the original MTCNN and its TensorFlow port rather than facenet-pytorch's
code: the pyramid and the crops are resized by OpenCV's pixel-area interpolation (facenet-pytorch
uses torch's, which moves a box by a few percent of its side), and every suppression counts
pixels inclusively (+1). Crops that reach beyond the frame are zero-padded, not stretched.

The functions are pure: `pnet`, `rnet`, `onet` (weights, NCHW input -> outputs), the pyramid's
scales, the box arithmetic and the suppression; `Cascade` holds the weights and runs a frame.
Boxes are (x0, y0, x1, y1) in MTCNN's own convention (`detectors.MTCNN_TO_DLIB` maps them onto
dlib's).
"""

from __future__ import annotations

import pathlib

import cv2
import numpy as np

THRESHOLDS = (0.6, 0.7, 0.7)  # P-Net, R-Net, O-Net face probability to keep a box
FACTOR = 0.709  # the pyramid's step: each level's side is this times the previous one's
STAGES = ("pnet", "rnet", "onet")
WINDOW = 12  # P-Net's window (px at its input); stride 2


def load(weights_dir: pathlib.Path) -> dict[str, dict]:
  """{stage: its state dict (torch tensors)} from `weights_dir`/<stage>.pt."""
  torch = _torch()
  out = {}
  for stage in STAGES:
    path = pathlib.Path(weights_dir) / f"{stage}.pt"
    if not path.is_file():
      raise FileNotFoundError(f"MTCNN weights {path} do not exist")
    out[stage] = {k: v.float() for k, v in torch.load(path, weights_only=True).items()}
  return out


def _torch():
  """torch, imported on first use: importing this module (as detectors.py does for every
  command) must not cost torch's 1.4 s."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def _conv(x, p, name, prelu: bool = True):
  F = _torch().nn.functional  # pylint: disable=invalid-name
  y = F.conv2d(x, p[f"{name}.weight"], p[f"{name}.bias"])
  return F.prelu(y, p[name.replace("conv", "prelu") + ".weight"]) if prelu else y


def _pool(x, k, s):
  return _torch().nn.functional.max_pool2d(x, k, s, ceil_mode=True)


def _flat(x):
  # The converted weights expect (N, W, H, C) order when flattened.
  return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


def _dense(x, p, name, prelu: str | None = None):
  F = _torch().nn.functional  # pylint: disable=invalid-name
  y = F.linear(x, p[f"{name}.weight"], p[f"{name}.bias"])
  return F.prelu(y, p[f"{prelu}.weight"]) if prelu else y


def _face(logits):
  return _torch().softmax(logits, 1)[:, 1]


def pnet(p, x):
  """x [N, 3, H, W] -> (face probability [N, H', W'], box offsets [N, 4, H', W'])."""
  x = _pool(_conv(x, p, "conv1"), 2, 2)
  x = _conv(_conv(x, p, "conv2"), p, "conv3")
  return _face(_conv(x, p, "conv4_1", prelu=False)), _conv(x, p, "conv4_2", prelu=False)


def rnet(p, x):
  """x [N, 3, 24, 24] -> (face probability [N], box offsets [N, 4])."""
  x = _pool(_conv(x, p, "conv1"), 3, 2)
  x = _pool(_conv(x, p, "conv2"), 3, 2)
  x = _dense(_flat(_conv(x, p, "conv3")), p, "dense4", "prelu4")
  return _face(_dense(x, p, "dense5_1")), _dense(x, p, "dense5_2")


def onet(p, x):
  """x [N, 3, 48, 48] -> (face probability [N], box offsets [N, 4])."""
  x = _pool(_conv(x, p, "conv1"), 3, 2)
  x = _pool(_conv(x, p, "conv2"), 3, 2)
  x = _pool(_conv(x, p, "conv3"), 2, 2)
  x = _dense(_flat(_conv(x, p, "conv4")), p, "dense5", "prelu5")
  return _face(_dense(x, p, "dense6_1")), _dense(x, p, "dense6_2")


def scales(h: int, w: int, min_face: float, factor: float = FACTOR) -> list[float]:
  """The pyramid: the first level maps a `min_face` px face onto P-Net's 12 px window; levels
  shrink by `factor` while the shorter side still holds the window."""
  out, s = [], WINDOW / float(min_face)
  while min(h, w) * s >= WINDOW:
    out.append(s)
    s *= factor
  return out


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by: str = "union"
        ) -> np.ndarray:
  """Indices kept by greedy non-maximum suppression, highest score first: a box is dropped
  when its overlap with a kept one exceeds `threshold`, the overlap being the intersection over
  the union (`union`) or over the smaller box (`min`). Areas count pixels inclusively. Many
  boxes with positive scores under `union` go through OpenCV's suppression (C++; the same
  indices, tested)."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64)
  if by == "union" and len(boxes) > 64 and (scores > 0).all():  # OpenCV drops scores <= 0
    keep = cv2.dnn.NMSBoxes(np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2] + 1], 1),
                            np.asarray(scores, np.float32), 0.0, float(threshold))
    return np.asarray(keep, np.int64).reshape(-1)
  return greedy_nms(boxes, scores, threshold, by)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by: str = "union"
               ) -> np.ndarray:
  """`nms` in NumPy, for any number of boxes."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if not len(boxes):
    return np.zeros(0, np.int64)
  area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  keep = []
  while len(order):
    i, rest = order[0], order[1:]
    keep.append(i)
    iw = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) -
                    np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
    ih = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) -
                    np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
    inter = iw * ih
    denom = np.minimum(area[i], area[rest]) if by == "min" else area[i] + area[rest] - inter
    order = rest[inter / denom <= threshold]
  return np.asarray(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
  """Each box made square about its centre, on its longer side."""
  b = np.asarray(boxes, np.float64).copy()
  w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
  side = np.maximum(w, h)
  b[:, 0] += (w - side) / 2
  b[:, 1] += (h - side) / 2
  b[:, 2] = b[:, 0] + side
  b[:, 3] = b[:, 1] + side
  return b


def regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool = True) -> np.ndarray:
  """Boxes moved by the network's offsets, each a fraction of the box's width or height."""
  b = np.asarray(boxes, np.float64)
  one = 1.0 if inclusive else 0.0
  wh = np.stack([b[:, 2] - b[:, 0] + one, b[:, 3] - b[:, 1] + one] * 2, 1)
  return b + np.asarray(offsets, np.float64) * wh


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  """[n, size, size, C] float32: each box's pixels (columns trunc(x0)-1 .. trunc(x1)-1, rows
  likewise, MTCNN's indexing), zero outside the frame, resized by pixel area."""
  h, w = image.shape[:2]
  out = np.zeros((len(boxes), size, size, image.shape[2]), np.float32)
  for k, (x0, y0, x1, y1) in enumerate(np.trunc(np.asarray(boxes)).astype(np.int64)):
    c0, r0, c1, r1 = x0 - 1, y0 - 1, x1, y1  # half-open
    if c1 <= c0 or r1 <= r0:
      continue
    patch = np.zeros((r1 - r0, c1 - c0, image.shape[2]), np.float32)
    sr0, sc0, sr1, sc1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
    if sr1 > sr0 and sc1 > sc0:
      patch[sr0 - r0:sr1 - r0, sc0 - c0:sc1 - c0] = image[sr0:sr1, sc0:sc1]
    out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA).reshape(
        size, size, -1)
  return out


def _tensor(x: np.ndarray):
  """[N, H, W, C] pixels -> MTCNN's input: NCHW in channels-last memory (torch's CPU
  convolutions run these small networks 2x faster so), (x - 127.5) / 128."""
  return _torch().from_numpy((np.asarray(x, np.float32) - 127.5) / 128.0).permute(0, 3, 1, 2)


class Cascade:
  """MTCNN over an RGB frame: `cascade(rgb) -> (boxes [n, 4] float32, scores [n])`, highest
  score first."""

  def __init__(self, weights_dir: pathlib.Path, min_face: float = 20.0,
               thresholds=THRESHOLDS, factor: float = FACTOR, threads: int = 1,
               batch: int = 256):
    if not min_face > 0:
      raise ValueError(f"MTCNN's min_face must be > 0 px, got {min_face}")
    self.weights = load(weights_dir)
    self.min_face, self.thresholds, self.factor = float(min_face), tuple(thresholds), factor
    self.threads, self.batch = int(threads), int(batch)
    self._torch = _torch()

  def _stage(self, net, p, x: np.ndarray):
    probs, regs = [], []
    for i in range(0, len(x), self.batch):
      prob, reg = net(p, _tensor(x[i:i + self.batch]))
      probs.append(prob.numpy())
      regs.append(reg.numpy())
    return np.concatenate(probs), np.concatenate(regs)

  def __call__(self, rgb: np.ndarray, min_face: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """`min_face`: this frame's smallest face (px), instead of the constructor's."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
      raise ValueError(f"MTCNN takes an H x W x 3 RGB frame, got an array of shape {rgb.shape}")
    min_face = self.min_face if min_face is None else float(min_face)
    if not min_face > 0:
      raise ValueError(f"MTCNN's min_face must be > 0 px, got {min_face}")
    torch = self._torch
    previous = torch.get_num_threads()
    torch.set_num_threads(self.threads)
    try:
      with torch.inference_mode():
        return self._run(rgb, min_face)
    finally:
      torch.set_num_threads(previous)

  def _run(self, rgb: np.ndarray, min_face: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = rgb.shape[:2]
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    found = []
    for s in scales(h, w, min_face, self.factor):
      level = cv2.resize(rgb, (int(w * s + 1), int(h * s + 1)), interpolation=cv2.INTER_AREA)
      prob, reg = pnet(self.weights["pnet"], _tensor(level[None]))
      prob, reg = prob[0].numpy(), reg[0].numpy()
      ys, xs = np.nonzero(prob >= self.thresholds[0])
      if not len(ys):
        continue
      at = np.stack([xs, ys], 1).astype(np.float64)
      boxes = np.concatenate([np.floor((2 * at + 1) / s), np.floor((2 * at + WINDOW) / s)], 1)
      score = prob[ys, xs]
      offsets = reg[:, ys, xs].T
      keep = nms(boxes, score, 0.5)
      found.append((boxes[keep], score[keep], offsets[keep]))
    if not found:
      return empty
    boxes, score, offsets = (np.concatenate(v) for v in zip(*found))
    keep = nms(boxes, score, 0.7)
    boxes = square(regress(boxes[keep], offsets[keep], inclusive=False))
    for stage, size, threshold, by in (("rnet", 24, self.thresholds[1], "union"),
                                       ("onet", 48, self.thresholds[2], "min")):
      net = rnet if stage == "rnet" else onet
      prob, reg = self._stage(net, self.weights[stage], crops(rgb, boxes, size))
      passed = prob > threshold
      boxes, score, reg = boxes[passed], prob[passed], reg[passed]
      if not len(boxes):
        return empty
      if stage == "rnet":
        keep = nms(boxes, score, 0.7)
        boxes = square(regress(boxes[keep], reg[keep]))
        score = score[keep]
      else:
        boxes = regress(boxes, reg)
        keep = nms(boxes, score, 0.7, by)
        boxes, score = boxes[keep], score[keep]
    order = np.argsort(-score, kind="stable")
    return boxes[order].astype(np.float32), score[order].astype(np.float32)
