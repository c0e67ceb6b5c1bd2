"""FERPlus as a tensorflow-datasets builder (array_record, no TensorFlow).

The manual dir holds one of the two layouts a user has:

- Microsoft's: `FER2013Train/`, `FER2013Valid/`, `FER2013Test/`, each PNGs plus `label.csv`
  (`name,"(x, y, w, h)",` then ten vote counts), as `generate_training_data.py` writes them;
- Kaggle's `fer2013.csv` (emotion, pixels, Usage; or `icml_face_data.csv`, whose headers carry
  spaces) beside Microsoft's `fer2013new.csv` (Usage, Image name, ten vote counts), joined row by
  row. Rows without an image name are not faces and are skipped; when a name repeats, the later
  row wins, as Microsoft's script overwrote the earlier image.

A split whose files are absent is an absent split. Each example keeps the PNG bytes, the ten
vote counts, the image name, the face box and 68 landmarks fitted per image (`dlib` config) or
the template (`template` config). A corrupt image, an image that is not 48x48, or a CSV row
whose pixel count is not 2304 is skipped with a warning naming it, and counted in the summary.

Prepare reads only what it should: a label.csv image name that resolves outside its split folder
(`../x.png`, an absolute path, a subfolder that is a symlink to elsewhere) is refused and its
file never opened; vote counts must be whole numbers in [0, MAX_VOTES] and Kaggle pixels whole
numbers in [0, 255]. Each bad row is skipped with a warning naming the file, the line and the
value, and counted; the summary names the first of each kind. A row whose ten counts are all
zero is kept: it carries no label, and `labels.targets_for_split` drops it in every mode.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import pathlib
import re
from typing import Iterator

from absl import logging
import cv2
import numpy as np
import tensorflow_datasets as tfds

from fer_jax.data import labels as labels_lib
from fer_jax.data import landmarks as landmarks_lib
from fer_jax import errors

FACE_SIZE = 48
MS_FOLDERS = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}
KAGGLE_USAGE = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
KAGGLE_PIXELS = ("fer2013.csv", "icml_face_data.csv")
KAGGLE_LABELS = "fer2013new.csv"
# The most votes one image may hold in one category. FERPlus asked about ten annotators per
# image, so 1000 leaves room for any re-annotation while refusing what is surely not a count
# (1e12, a value pasted into the wrong column); it also keeps every count and every sum of ten
# well inside int32, the dtype the dataset stores.
MAX_VOTES = 1000


@dataclasses.dataclass
class Report:
  """What preparing one split kept and skipped, and why."""
  written: int = 0
  landmarks_fitted: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  first: dict[str, str] = dataclasses.field(default_factory=dict)  # why -> its first culprit

  def skip(self, why: str, what: str, warn: bool = True) -> None:
    """Counts one skipped row under `why`; `what` names the file, line and value."""
    if warn:
      logging.warning("FERPlus: skipping %s", what)
    self.skipped[why] += 1
    self.first.setdefault(why, what)

  def line(self, split: str) -> str:
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
    first = "; ".join(f"{why}: {self.first[why]}" for why in sorted(self.first))
    return (f"{split}: {self.written} examples written, landmarks fitted on "
            f"{self.landmarks_fitted} (template on the rest); skipped: {skipped}"
            + (f"; first of each: {first}" if first else ""))


def detect_layout(manual_dir: pathlib.Path) -> str:
  """`microsoft` or `kaggle`, or a `errors.ManualDirError` that names what was looked for."""
  manual_dir = pathlib.Path(manual_dir)
  if any((manual_dir / f / "label.csv").exists() for f in MS_FOLDERS.values()):
    return "microsoft"
  if (manual_dir / KAGGLE_LABELS).exists() and any((manual_dir / p).exists()
                                                   for p in KAGGLE_PIXELS):
    return "kaggle"
  what = "does not exist" if not manual_dir.exists() else (
      "is empty" if not any(manual_dir.iterdir()) else "holds neither FERPlus layout")
  raise errors.ManualDirError(
      f"FERPlus manual dir {manual_dir} {what}. Looked for Microsoft's layout "
      f"({', '.join(f + '/label.csv' for f in MS_FOLDERS.values())} with their PNGs) and for "
      f"Kaggle's ({' or '.join(KAGGLE_PIXELS)} beside {KAGGLE_LABELS}). "
      f"Set --config.data.manual_dir to the folder that holds them.")


def _parse_box(text: str) -> np.ndarray:
  nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]
  if len(nums) != 4:
    return np.array([0, 0, FACE_SIZE, FACE_SIZE], np.float32)
  return np.array(nums, np.float32)


def _check_votes(fields: list[str]) -> tuple[np.ndarray | None, str]:
  """Ten vote-count fields -> (int32 [10], "") or (None, what is wrong with which values)."""
  try:
    values = [float(v) for v in fields]
  except ValueError:
    return None, "not numbers"
  bad = [f.strip() for f, v in zip(fields, values)
         if not (math.isfinite(v) and 0 <= v <= MAX_VOTES and v == int(v))]
  if bad:
    return None, (f"{', '.join(bad)} not whole number(s) in [0, {MAX_VOTES}] (MAX_VOTES)")
  return np.array(values, np.int32), ""


def _check_pixels(pix: np.ndarray) -> str:
  """"" if every value is a whole number in [0, 255], else which values are not, and where."""
  with np.errstate(invalid="ignore"):
    bad = ~np.isfinite(pix) | (pix < 0) | (pix > 255) | (pix != np.round(pix))
  if not bad.any():
    return ""
  where = np.flatnonzero(bad)
  shown = ", ".join(f"{pix[i]:g} at {i}" for i in where[:5])
  more = f" and {len(where) - 5} more" if len(where) > 5 else ""
  return f"{len(where)} pixel value(s) not whole numbers in [0, 255]: {shown}{more}"


def _check_image(img: np.ndarray | None, what: str, report: Report) -> np.ndarray | None:
  if img is None:
    report.skip("unreadable image", f"{what}: not a readable image")
    return None
  if img.ndim == 3:
    if img.shape[2] == 4:
      img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    elif img.shape[2] == 3:
      img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    else:
      img = img[..., 0]
  if img.dtype != np.uint8:
    img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
  if img.shape != (FACE_SIZE, FACE_SIZE):
    report.skip("wrong image size", f"{what}: image is {'x'.join(map(str, img.shape))}, "
                f"expected {FACE_SIZE}x{FACE_SIZE} grey")
    return None
  return img


def read_microsoft(folder: pathlib.Path, report: Report) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
  """(name, image [48, 48] uint8, votes [10], box [4]) from one Microsoft split folder."""
  label_csv = folder / "label.csv"
  root = folder.resolve()
  with open(label_csv, newline="") as f:
    for line_no, row in enumerate(csv.reader(f), 1):
      if not row or not row[0].strip():
        continue
      at = f"{label_csv} line {line_no}"
      if len(row) < 12:
        report.skip("malformed label row",
                    f"{at}: {len(row)} fields, expected 12 (name, box, ten votes)")
        continue
      name = row[0].strip()
      votes, wrong = _check_votes(row[2:12])
      if votes is None:
        report.skip("malformed label row" if wrong == "not numbers" else "bad vote counts",
                    f"{at} ({name}): vote counts {row[2:12]} are {wrong}")
        continue
      path = folder / name
      try:  # resolved before anything is opened: the name may not leave the split folder
        real = path.resolve()
        inside = real.is_relative_to(root)
      except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte
        report.skip("missing image", f"{at}: image name {name!r} cannot be resolved ({e})")
        continue
      if not inside:
        report.skip("name outside its split folder",
                    f"{at}: image name {name!r} resolves outside {folder}; not read")
        continue
      if not path.exists():
        report.skip("missing image", f"{path}: listed in {at} but missing")
        continue
      img = _check_image(cv2.imread(str(real), cv2.IMREAD_UNCHANGED),
                         f"{path} (listed in {at})", report)
      if img is not None:
        yield name, img, votes, _parse_box(row[1])


def _clean(header: list[str]) -> list[str]:
  return [h.strip() for h in header]


def read_kaggle(manual_dir: pathlib.Path, report_for: dict[str, Report]
                ) -> dict[str, list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]:
  """All splits of the Kaggle layout: split -> [(name, image, votes, box)], later rows win."""
  pixels_csv = next(manual_dir / p for p in KAGGLE_PIXELS if (manual_dir / p).exists())
  labels_csv = manual_dir / KAGGLE_LABELS
  out: dict[str, dict[str, tuple]] = {s: {} for s in KAGGLE_USAGE.values()}
  with open(pixels_csv, newline="") as fp, open(labels_csv, newline="") as fl:
    pr, lr = csv.reader(fp), csv.reader(fl)
    ph, lh = _clean(next(pr, [])), _clean(next(lr, []))
    for need, header, path in ((("pixels", "Usage"), ph, pixels_csv),
                               (("Usage", "Image name") + labels_lib.VOTE_NAMES, lh, labels_csv)):
      missing = [c for c in need if c not in header]
      if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; its header is {header}")
    pi, ui = ph.index("pixels"), ph.index("Usage")
    ni, vi = lh.index("Image name"), [lh.index(c) for c in labels_lib.VOTE_NAMES]
    row_no = 1
    while True:
      prow, lrow = next(pr, None), next(lr, None)
      row_no += 1
      if prow is None and lrow is None:
        break
      if prow is None or lrow is None:
        shorter = pixels_csv if prow is None else labels_csv
        logging.warning("FERPlus: %s ends at row %d, before the other CSV; the rest is skipped",
                        shorter, row_no - 1)
        report_for["train"].skipped["rows past the end of the shorter CSV"] += 1
        rest = pr if prow is not None else lr
        report_for["train"].skipped["rows past the end of the shorter CSV"] += sum(1 for _ in rest)
        break
      if len(prow) < len(ph):
        report_for["train"].skip(
            "malformed CSV row", f"{pixels_csv} row {row_no}: {len(prow)} fields, expected "
            f"{len(ph)} ({','.join(ph)}); a truncated or malformed row")
        continue
      usage = prow[ui].strip()
      split = KAGGLE_USAGE.get(usage)
      if split is None:
        report_for["train"].skip("unknown usage",
                                 f"{pixels_csv} row {row_no}: unknown Usage {usage!r}")
        continue
      report = report_for[split]
      name = lrow[ni].strip() if len(lrow) > ni else ""
      if not name:
        report.skip("no image name (not a face)", f"{labels_csv} row {row_no}", warn=False)
        continue
      if len(lrow) <= max(vi):
        report.skip("malformed CSV row", f"{labels_csv} row {row_no} ({name}): {len(lrow)} "
                    f"fields, expected {len(lh)} ({','.join(lh)})")
        continue
      fields = [lrow[i] for i in vi]
      votes, wrong = _check_votes(fields)
      if votes is None:
        report.skip("malformed CSV row" if wrong == "not numbers" else "bad vote counts",
                    f"{labels_csv} row {row_no} ({name}): vote counts {fields} are {wrong}")
        continue
      try:
        pix = np.array(prow[pi].split(), np.float64)
      except ValueError:
        report.skip("malformed CSV row",
                    f"{pixels_csv} row {row_no} ({name}): pixels are not numbers")
        continue
      if pix.size != FACE_SIZE * FACE_SIZE:
        report.skip("wrong pixel count", f"{pixels_csv} row {row_no} ({name}): {pix.size} "
                    f"pixels, expected {FACE_SIZE * FACE_SIZE}")
        continue
      wrong = _check_pixels(pix)
      if wrong:
        report.skip("bad pixel values", f"{pixels_csv} row {row_no} ({name}): {wrong}")
        continue
      if name in out[split]:
        logging.warning("FERPlus: %s names two rows; the later row (%d) wins", name, row_no)
        report.skipped["repeated name (earlier row dropped)"] += 1
        report.first.setdefault("repeated name (earlier row dropped)",
                                f"{labels_csv} row {row_no} ({name})")
      img = pix.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE)
      out[split][name] = (name, img, votes, np.array([0, 0, FACE_SIZE, FACE_SIZE], np.float32))
  return {s: list(d.values()) for s, d in out.items() if d}


def available_splits(manual_dir: pathlib.Path) -> list[str]:
  layout = detect_layout(manual_dir)
  if layout == "microsoft":
    return [s for s, f in MS_FOLDERS.items() if (manual_dir / f / "label.csv").exists()]
  usages = set()
  pixels_csv = next(manual_dir / p for p in KAGGLE_PIXELS if (manual_dir / p).exists())
  with open(pixels_csv, newline="") as f:
    reader = csv.reader(f)
    header = _clean(next(reader, []))
    if "Usage" not in header:
      raise ValueError(f"{pixels_csv}: no Usage column; its header is {header}")
    ui = header.index("Usage")
    for row in reader:
      if len(row) > ui:
        usages.add(row[ui].strip())
  return [s for u, s in KAGGLE_USAGE.items() if u in usages]


class FerPlusConfig(tfds.core.BuilderConfig):
  """Which landmark source fits the 68 points stored with each face."""

  def __init__(self, *, landmarks: str, **kwargs):
    super().__init__(**kwargs)
    self.landmarks = landmarks


class FerPlus(tfds.core.GeneratorBasedBuilder):
  """FERPlus: FER2013 faces with ten annotators' votes each."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "PNG bytes, votes, name, box and 68 landmarks per face."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put Microsoft's FER2013Train/FER2013Valid/FER2013Test folders (PNGs and label.csv), or "
      "Kaggle's fer2013.csv (or icml_face_data.csv) beside Microsoft's fer2013new.csv, in the "
      "manual dir.")
  BUILDER_CONFIGS = [
      FerPlusConfig(name="dlib", landmarks="dlib",
                    description="68 points fitted per face by dlib, template where it fails."),
      FerPlusConfig(name="template", landmarks="template",
                    description="The mean FERPlus shape for every face."),
  ]
  DEFAULT_CONFIG_NAME = "dlib"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.reports: dict[str, Report] = collections.defaultdict(Report)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # PNG bytes
            "votes": tfds.features.Tensor(shape=(labels_lib.NUM_VOTES,), dtype=np.int32),
            "name": tfds.features.Text(),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "landmarks": tfds.features.Tensor(shape=(68, 2), dtype=np.float32),
            "landmarks_fitted": tfds.features.Tensor(shape=(), dtype=np.bool_),
        }),
        homepage="https://github.com/microsoft/FERPlus",
        citation="Barsoum et al., Training deep networks for facial expression recognition "
                 "with crowd-sourced label distribution, ICMI 2016.",
    )

  def _split_generators(self, dl_manager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    splits = available_splits(manual_dir)
    if detect_layout(manual_dir) == "kaggle":
      kaggle = read_kaggle(manual_dir, self.reports)
      return {s: self._generate_examples(rows=kaggle.get(s, []), split=s) for s in splits}
    return {s: self._generate_examples(folder=manual_dir / MS_FOLDERS[s], split=s)
            for s in splits}

  def _generate_examples(self, split: str, folder: pathlib.Path | None = None, rows=None):
    report = self.reports[split]
    source = landmarks_lib.make_source(self.builder_config.landmarks)
    fitter = landmarks_lib.AlignedFitter(source)
    items = read_microsoft(folder, report) if folder is not None else rows
    for name, img, votes, box in items:
      pts, fitted = fitter(img)
      ok, png = cv2.imencode(".png", img)
      report.written += 1
      report.landmarks_fitted += int(fitted)
      yield name, dict(image=png.tobytes(), votes=votes, name=name, box=box, landmarks=pts,
                       landmarks_fitted=fitted)


def builder(tfds_dir: str, landmarks: str = "dlib") -> FerPlus:
  return FerPlus(config=landmarks, data_dir=tfds_dir, file_format="array_record")


def prepare(manual_dir: str, tfds_dir: str, landmarks: str = "dlib") -> dict[str, dict[str, int]]:
  """Builds the dataset (once) and returns each split's size and majority-vote size."""
  manual = pathlib.Path(manual_dir)
  detect_layout(manual)  # fail fast, naming the folder
  b = builder(tfds_dir, landmarks)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  for split, report in sorted(b.reports.items()):
    logging.info("FERPlus %s", report.line(split))
  sizes = {}
  for split, source in b.as_data_source().items():
    votes = np.stack([source[i]["votes"] for i in range(len(source))]) if len(source) else \
        np.zeros((0, labels_lib.NUM_VOTES), np.int32)
    kept, _ = labels_lib.targets_for_split(votes, "majority")
    sizes[split] = dict(examples=len(source), majority=int(kept.sum()))
  return sizes


def decode_png(data: bytes) -> np.ndarray:
  """PNG bytes -> [H, W, 1] uint8."""
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
  if img is None:
    raise ValueError("corrupt PNG in the prepared dataset")
  return img[..., None]
