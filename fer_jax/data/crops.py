"""The five-way crops of the method, as pure `jax.numpy` functions that jit and vmap.

One face (an aligned face image [F, F, C] and its 68 iBUG landmarks) becomes `len(branches)`
crops of one size S, by default in the order face, eyes, nose, mouth, occluded:

- `face`: the whole face image;
- `eyes`, `nose`, `mouth` (and any region a config adds): the bounding box of the region's
  landmarks, padded, cropped and resized;
- `occluded`: the whole face with a rectangle of random position, size and fill inside the lower
  half of the face (below the nose bridge).

Augmentation (a horizontal flip and a small affine jitter) is one affine map from the original
image to a "view"; every crop samples the original image once through the inverse map (bilinear,
edges replicated), so jitter and resize cost one interpolation, not two.

Coordinates are pixel-index coordinates: x runs along the width, pixel (i, j) has its centre at
(x=j, y=i), and an image of width W spans [-0.5, W - 0.5]. A box is (x0, y0, x1, y1).

Randomness comes only from the `key` argument. In training it draws the flip, jitter and
occluder (and, with `occlude_face`, whether the `face` crop is occluded too); in evaluation
only the occluder, and callers pass `fold_in(key(seed), example_index)` so that the evaluation
crops are a pure function of (seed, example index).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# iBUG 68-point layout.
REGIONS: dict[str, tuple[int, ...]] = {
    "eyes": tuple(range(17, 27)) + tuple(range(36, 48)),  # brows and eyes
    "nose": tuple(range(27, 36)),
    "mouth": tuple(range(48, 68)),
    "left_eye": tuple(range(36, 42)),  # the subject's right eye, on the image's left
    "right_eye": tuple(range(42, 48)),
}
DEFAULT_BRANCHES = ("face", "eyes", "nose", "mouth", "occluded")
OCCLUDE_FACE_STREAM = 1  # fold_in(key, this): the coin of `occlude_face`
OCCLUDER_FILLS = ("uniform", "noise", "zero")  # what the occluder is painted with
NOSE_BRIDGE = 29  # the landmark whose height bounds the occluder from above (with F/2)


def _mirror_permutation() -> np.ndarray:
  """The index permutation that a horizontal flip induces on the 68 iBUG points."""
  pairs = [(i, 16 - i) for i in range(8)]  # jaw
  pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
  pairs += [(31, 35), (32, 34)]  # nostrils
  pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
  pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
  pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
  perm = np.arange(68)
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return perm


MIRROR = _mirror_permutation()


@dataclasses.dataclass(frozen=True)
class CropConfig:
  """Everything that shapes the crops. Built from `config.data.crops` by `from_config`.

  Attributes:
    size: side S of every crop, in pixels.
    branches: branch names in output order; `face`, `occluded` or a key of `REGIONS` or of
      `regions`.
    regions: extra or replacement regions, name -> landmark indices.
    pad: each region box grows by this fraction of its width (height) on the left and right
      (top and bottom).
    min_box: a region box is at least this fraction of the face size on each side.
    occluder_height, occluder_width: (min, max) of the occluder's height as a fraction of the
      lower-face band, and of its width as a fraction of the face width.
    occluder_fill: `uniform` (one random grey level), `noise` (per-pixel random) or `zero`.
    standardize: subtract each crop's mean and divide by its standard deviation.
    flip: in training, mirror the face with probability 1/2.
    max_rotation: in training, rotate by up to this many degrees.
    max_scale: in training, scale by a factor in [1 - max_scale, 1 + max_scale].
    max_shift: in training, shift by up to this fraction of the face size.
    occlude_face: in training, paint the lower-half occluder (the `occluded` branch's) over the
      `face` branch with this probability; never in evaluation. An augmentation for models
      without an `occluded` branch: the control that tells the occluded branch's gain apart
      from training on occluded faces (studies/README.md). 0 (the default) is off.
  """
  size: int = 64
  branches: tuple[str, ...] = DEFAULT_BRANCHES
  regions: tuple[tuple[str, tuple[int, ...]], ...] = ()
  pad: float = 0.15
  min_box: float = 0.25
  occluder_height: tuple[float, float] = (0.5, 1.0)
  occluder_width: tuple[float, float] = (0.4, 1.0)
  occluder_fill: str = "uniform"
  standardize: bool = True
  flip: bool = True
  max_rotation: float = 10.0
  max_scale: float = 0.1
  max_shift: float = 0.05
  occlude_face: float = 0.0

  def region(self, name: str) -> tuple[int, ...]:
    extra = dict(self.regions)
    if name in extra:
      return tuple(extra[name])
    if name in REGIONS:
      return REGIONS[name]
    raise KeyError(f"unknown branch {name!r}: expected one of {sorted(BRANCH_KINDS)}, a region "
                   f"of {sorted(REGIONS)} or one in data.crops.regions ({sorted(extra)})")

  def validate(self) -> "CropConfig":
    if self.size < 4:
      raise ValueError(f"data.crops.size must be >= 4, got {self.size}")
    if not self.branches:
      raise ValueError("data.crops.branches is empty")
    for name in self.branches:
      if name not in BRANCH_KINDS:
        idx = self.region(name)
        if not idx or min(idx) < 0 or max(idx) > 67:
          raise ValueError(f"region {name!r} must list landmark indices in [0, 67], got {idx}")
    for field in ("occluder_height", "occluder_width"):
      lo, hi = getattr(self, field)
      if not 0 < lo <= hi <= 1:
        raise ValueError(f"data.crops.{field} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
    if self.occluder_fill not in OCCLUDER_FILLS:
      raise ValueError(f"data.crops.occluder_fill must be one of {', '.join(OCCLUDER_FILLS)}, "
                       f"got {self.occluder_fill!r}")
    if not 0 <= self.occlude_face <= 1:
      raise ValueError(f"data.crops.occlude_face is a probability in [0, 1], "
                       f"got {self.occlude_face!r}")
    return self


def from_config(crops_cfg: Mapping) -> CropConfig:
  """A `CropConfig` from the `config.data.crops` ConfigDict (or any mapping)."""
  d = dict(crops_cfg)
  regions = d.pop("regions", {}) or {}
  d["regions"] = tuple((k, tuple(int(i) for i in v)) for k, v in dict(regions).items())
  for k in ("branches", "occluder_height", "occluder_width"):
    if k in d:
      d[k] = tuple(d[k])
  unknown = set(d) - {f.name for f in dataclasses.fields(CropConfig)}
  if unknown:
    raise KeyError(f"unknown key(s) in data.crops: {sorted(unknown)}")
  return CropConfig(**d).validate()


# --------------------------------------------------------------------------------------------
# Geometry.

def region_box(landmarks: jax.Array, indices: Sequence[int], face_size: float, pad: float,
               min_box: float) -> jax.Array:
  """The padded bounding box (x0, y0, x1, y1) of `landmarks[indices]`."""
  pts = landmarks[jnp.asarray(indices)]
  lo, hi = pts.min(axis=0), pts.max(axis=0)
  centre, half = (lo + hi) / 2, (hi - lo) / 2
  half = jnp.maximum(half * (1 + 2 * pad), min_box * face_size / 2)
  return jnp.concatenate([centre - half, centre + half])


def face_box(face_size: float) -> jax.Array:
  return jnp.array([-0.5, -0.5, face_size - 0.5, face_size - 0.5], jnp.float32)


def branch_boxes(landmarks: jax.Array, face_size: int, cfg: CropConfig) -> jax.Array:
  """[num_branches, 4] boxes, in the coordinates of `landmarks`."""
  boxes = [BRANCH_KINDS[name].box(landmarks, face_size, cfg) if name in BRANCH_KINDS else
           region_box(landmarks, cfg.region(name), face_size, cfg.pad, cfg.min_box)
           for name in cfg.branches]
  return jnp.stack(boxes)


def flip_landmarks(landmarks: jax.Array, width: int) -> jax.Array:
  """Mirror 68 landmarks left-right: x -> W - 1 - x, and left and right points swap names."""
  landmarks = jnp.asarray(landmarks)
  mirrored = landmarks.at[:, 0].set(width - 1 - landmarks[:, 0])
  return mirrored[MIRROR]


def flip_image(image: jax.Array) -> jax.Array:
  return image[:, ::-1]


def augment_affine(key: jax.Array, face_size: int, cfg: CropConfig) -> tuple[jax.Array, jax.Array]:
  """A random view transform: (A [2, 3] mapping original -> view coordinates, flipped)."""
  k_flip, k_rot, k_scale, k_shift = jax.random.split(key, 4)
  flipped = jax.random.bernoulli(k_flip) & cfg.flip
  theta = jnp.deg2rad(cfg.max_rotation) * jax.random.uniform(k_rot, (), minval=-1, maxval=1)
  scale = 1 + cfg.max_scale * jax.random.uniform(k_scale, (), minval=-1, maxval=1)
  shift = cfg.max_shift * face_size * jax.random.uniform(k_shift, (2,), minval=-1, maxval=1)
  c = (face_size - 1) / 2
  cos, sin = jnp.cos(theta) * scale, jnp.sin(theta) * scale
  rot = jnp.array([[cos, -sin], [sin, cos]])
  # view = R (F p - c) + c + shift, with F the flip x -> 2c - x (applied first).
  flip_m = jnp.where(flipped, jnp.diag(jnp.array([-1.0, 1.0])), jnp.eye(2))
  lin = rot @ flip_m
  offset = c + shift - lin @ jnp.array([c, c])
  return jnp.concatenate([lin, offset[:, None]], axis=1), flipped


def apply_affine(affine: jax.Array, points: jax.Array) -> jax.Array:
  return points @ affine[:, :2].T + affine[:, 2]


def invert_affine(affine: jax.Array) -> jax.Array:
  lin_inv = jnp.linalg.inv(affine[:, :2])
  return jnp.concatenate([lin_inv, (-lin_inv @ affine[:, 2])[:, None]], axis=1)


def view_landmarks(landmarks: jax.Array, affine: jax.Array, flipped: jax.Array) -> jax.Array:
  """Landmarks in view coordinates, renamed as a mirror renames them."""
  moved = apply_affine(affine, landmarks)
  return jnp.where(flipped, moved[MIRROR], moved)


# --------------------------------------------------------------------------------------------
# Sampling.

def bilinear_sample(image: jax.Array, xs: jax.Array, ys: jax.Array) -> jax.Array:
  """image [H, W, C] sampled at float coordinates (edges replicated) -> [..., C]."""
  h, w = image.shape[:2]
  xs = jnp.clip(xs, 0, w - 1)
  ys = jnp.clip(ys, 0, h - 1)
  x0 = jnp.clip(jnp.floor(xs), 0, w - 2 if w > 1 else 0).astype(jnp.int32)
  y0 = jnp.clip(jnp.floor(ys), 0, h - 2 if h > 1 else 0).astype(jnp.int32)
  x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
  fx, fy = (xs - x0)[..., None], (ys - y0)[..., None]
  top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
  bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
  return top * (1 - fy) + bottom * fy


def crop_and_resize(image: jax.Array, box: jax.Array, size: int,
                    view_to_image: jax.Array | None = None) -> jax.Array:
  """The view-space `box` of `image`, resized to [size, size, C] (bilinear).

  `view_to_image` [2, 3] maps view coordinates to image coordinates (identity when None).
  """
  t = (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
  gx = box[0] + t * (box[2] - box[0])  # output pixel centres, in view coordinates
  gy = box[1] + t * (box[3] - box[1])
  xs, ys = jnp.meshgrid(gx, gy)
  if view_to_image is not None:
    pts = apply_affine(view_to_image, jnp.stack([xs, ys], -1))
    xs, ys = pts[..., 0], pts[..., 1]
  return bilinear_sample(image, xs, ys)


def _box_in_band(key: jax.Array, top: jax.Array, bottom: jax.Array, face_size: int,
                 cfg: CropConfig) -> jax.Array:
  """A random box spanning `occluder_height` of the band [top, bottom] and `occluder_width`
  of the face width, placed uniformly inside both."""
  k_h, k_w, k_y, k_x = jax.random.split(key, 4)
  band = bottom - top
  h = band * jax.random.uniform(k_h, (), minval=cfg.occluder_height[0],
                                maxval=cfg.occluder_height[1])
  w = face_size * jax.random.uniform(k_w, (), minval=cfg.occluder_width[0],
                                     maxval=cfg.occluder_width[1])
  y0 = top + (band - h) * jax.random.uniform(k_y, ())
  x0 = -0.5 + (face_size - w) * jax.random.uniform(k_x, ())
  return jnp.stack([x0, y0, x0 + w, y0 + h])


def lower_band_top(landmarks: jax.Array, face_size: int) -> jax.Array:
  """Where the lower face begins: max(F/2, y of the nose bridge), kept one pixel above the
  bottom."""
  return jnp.clip(jnp.maximum(landmarks[NOSE_BRIDGE, 1], face_size / 2 - 0.5), None,
                  face_size - 1.5)


def occluder_box(key: jax.Array, landmarks: jax.Array, face_size: int,
                 cfg: CropConfig) -> jax.Array:
  """A random box (x0, y0, x1, y1) inside the lower band of the face, in face coordinates.

  The band spans the full width and runs from `lower_band_top` to the bottom.
  """
  return _box_in_band(key, lower_band_top(landmarks, face_size),
                      jnp.asarray(face_size - 0.5, jnp.float32), face_size, cfg)


def upper_occluder_box(key: jax.Array, landmarks: jax.Array, face_size: int,
                       cfg: CropConfig) -> jax.Array:
  """As `occluder_box`, in the upper band: from the top to min(F/2, y of the nose bridge)."""
  bottom = jnp.clip(jnp.minimum(landmarks[NOSE_BRIDGE, 1], face_size / 2 - 0.5), 0.5, None)
  return _box_in_band(key, jnp.asarray(-0.5, jnp.float32), bottom, face_size, cfg)


def paint_occluder(crop: jax.Array, box: jax.Array, face_size: int, key: jax.Array,
                   fill: str) -> jax.Array:
  """Fill the part of a whole-face crop [S, S, C] that `box` (face coordinates) covers."""
  s = crop.shape[0]
  centres = (jnp.arange(s, dtype=jnp.float32) + 0.5) * face_size / s - 0.5
  inside_x = (centres >= box[0]) & (centres < box[2])
  inside_y = (centres >= box[1]) & (centres < box[3])
  mask = (inside_y[:, None] & inside_x[None, :])[..., None]
  if fill == "uniform":
    value = jax.random.uniform(key, (1, 1, crop.shape[-1]))
  elif fill == "noise":
    value = jax.random.uniform(key, crop.shape)
  else:
    value = jnp.zeros((1, 1, crop.shape[-1]))
  return jnp.where(mask, value.astype(crop.dtype), crop)


def standardize(crop: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Zero mean, unit variance per crop (eps keeps a flat crop finite)."""
  mean = crop.mean()
  return (crop - mean) / jnp.sqrt(jnp.mean(jnp.square(crop - mean)) + eps)


# --------------------------------------------------------------------------------------------
# Branch kinds.

def _whole_face(landmarks: jax.Array, face_size: int, cfg: CropConfig) -> jax.Array:
  del landmarks, cfg
  return face_box(face_size)


@dataclasses.dataclass(frozen=True)
class BranchKind:
  """How a branch that is not a landmark region is cut.

  Attributes:
    box: (view landmarks [68, 2], face size F, cfg) -> the box (x0, y0, x1, y1) to crop.
    occluder: None, or (key, view landmarks, F, cfg) -> a box in face coordinates that is
      painted over the crop (`paint_occluder`, with `cfg.occluder_fill`).
  """
  box: Callable[[jax.Array, int, CropConfig], jax.Array]
  occluder: Callable[[jax.Array, jax.Array, int, CropConfig], jax.Array] | None = None
  uses_landmarks: bool = True


# Branch name -> kind. Every other branch name is a landmark region (`REGIONS` or
# `data.crops.regions`), cut as the padded box of its landmarks. A new kind (another occluder,
# say) is one entry here.
BRANCH_KINDS: dict[str, BranchKind] = {
    "face": BranchKind(_whole_face, uses_landmarks=False),
    "occluded": BranchKind(_whole_face, occluder_box),  # the paper's: lower half of the face
    "occluded_upper": BranchKind(_whole_face, upper_occluder_box),  # brows and eyes covered
}


def uses_landmarks(branches: tuple[str, ...]) -> bool:
  """Whether any of these branches' crops depends on the face's landmarks (every landmark
  region does; of the kinds, the occluded ones place their occluder by them)."""
  return any(BRANCH_KINDS[n].uses_landmarks if n in BRANCH_KINDS else True for n in branches)


# --------------------------------------------------------------------------------------------
# The whole transform.

def five_crops(image: jax.Array, landmarks: jax.Array, key: jax.Array, cfg: CropConfig,
               train: bool) -> dict[str, jax.Array]:
  """One face -> its branch crops.

  Args:
    image: [F, F, C] uint8 (0-255) or float (0-1) aligned face.
    landmarks: [68, 2] (x, y) in pixel-index coordinates of `image`.
    key: PRNG key. Training draws flip, jitter and occluder from it; evaluation draws only the
      occluder (pass `fold_in(key(seed), example_index)`).
    cfg: the crop configuration.
    train: whether to augment.

  Returns:
    dict with `crops` [num_branches, S, S, C] float32, `boxes` [num_branches, 4] (view coords),
    `landmarks` [68, 2] (view coords), `occluder` [4] (view coords) and `affine` [2, 3]
    (original -> view coordinates).
  """
  face_size = image.shape[0]
  if image.shape[0] != image.shape[1]:
    raise ValueError(f"five_crops needs a square face image, got {image.shape}")
  if jnp.issubdtype(image.dtype, jnp.integer):
    image = image.astype(jnp.float32) / 255.0
  image = image.astype(jnp.float32)
  k_aug, k_occ, k_fill = jax.random.split(key, 3)
  if train:
    affine, flipped = augment_affine(k_aug, face_size, cfg)
  else:
    affine, flipped = jnp.concatenate([jnp.eye(2), jnp.zeros((2, 1))], 1), jnp.array(False)
  view_to_image = invert_affine(affine)
  lm_view = view_landmarks(landmarks.astype(jnp.float32), affine, flipped)
  boxes = branch_boxes(lm_view, face_size, cfg)
  occ = occluder_box(k_occ, lm_view, face_size, cfg)
  crops = []
  for name, box in zip(cfg.branches, boxes):
    crop = crop_and_resize(image, box, cfg.size, view_to_image)
    kind = BRANCH_KINDS.get(name)
    if kind is not None and kind.occluder is not None:
      box_painted = kind.occluder(k_occ, lm_view, face_size, cfg)
      crop = paint_occluder(crop, box_painted, face_size, k_fill, cfg.occluder_fill)
    elif name == "face" and train and cfg.occlude_face > 0:
      # Its own coin, folded from the key, so that the other draws stay as they were.
      coin = jax.random.bernoulli(jax.random.fold_in(key, OCCLUDE_FACE_STREAM),
                                  cfg.occlude_face)
      painted = paint_occluder(crop, occ, face_size, k_fill, cfg.occluder_fill)
      crop = jnp.where(coin, painted, crop)
    crops.append(crop)
  crops = jnp.stack(crops)
  if cfg.standardize:
    crops = jax.vmap(standardize)(crops)
  return dict(crops=crops, boxes=boxes, landmarks=lm_view, occluder=occ, affine=affine)


def batch_crops(images: jax.Array, landmarks: jax.Array, keys: jax.Array, cfg: CropConfig,
                train: bool) -> jax.Array:
  """five_crops over a batch: images [B, F, F, C] (0-255 or 0-1) -> [B, nb, S, S, C].

  `keys` is [B] (one key per example).
  """
  fn = lambda im, lm, k: five_crops(im, lm, k, cfg, train)["crops"]
  return jax.vmap(fn)(images, landmarks, keys)


def model_inputs(batch: Mapping[str, jax.Array], cfg: CropConfig, seed: int, train: bool,
                 crops_on: str) -> jax.Array:
  """The model's input [B, nb, S, S, C] for a batch: its `crops` when the host cut them, else
  the crops of its uint8 `image`s and `landmarks`, keyed by `index` (see `example_keys`)."""
  if crops_on == "host":
    return batch["crops"]
  keys = example_keys(jax.random.key(seed), batch["index"])
  images = batch["image"].astype(jnp.float32) / 255.0
  return batch_crops(images, batch["landmarks"], keys, cfg, train)


def example_keys(seed_key: jax.Array, indices: jax.Array) -> jax.Array:
  """One key per example: fold the example's global index into `seed_key`."""
  return jax.vmap(lambda i: jax.random.fold_in(seed_key, i))(indices)
