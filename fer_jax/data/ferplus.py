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
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import pathlib
import re
from typing import Iterator

from absl import logging
import cv2
import numpy as np
import tensorflow_datasets as tfds

from fer_jax.data import labels as labels_lib
from fer_jax.data import landmarks as landmarks_lib

FACE_SIZE = 48
MS_FOLDERS = {"train": "FER2013Train", "validation": "FER2013Valid", "test": "FER2013Test"}
KAGGLE_USAGE = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
KAGGLE_PIXELS = ("fer2013.csv", "icml_face_data.csv")
KAGGLE_LABELS = "fer2013new.csv"


class ManualDirError(FileNotFoundError):
  """The manual dir holds neither FERPlus layout; the message says what was looked for."""


@dataclasses.dataclass
class Report:
  """What preparing one split kept and skipped, and why."""
  written: int = 0
  landmarks_fitted: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def line(self, split: str) -> str:
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
    return (f"{split}: {self.written} examples written, landmarks fitted on "
            f"{self.landmarks_fitted} (template on the rest); skipped: {skipped}")


def detect_layout(manual_dir: pathlib.Path) -> str:
  """`microsoft` or `kaggle`, or a `ManualDirError` that names what was looked for."""
  manual_dir = pathlib.Path(manual_dir)
  if any((manual_dir / f / "label.csv").exists() for f in MS_FOLDERS.values()):
    return "microsoft"
  if (manual_dir / KAGGLE_LABELS).exists() and any((manual_dir / p).exists()
                                                   for p in KAGGLE_PIXELS):
    return "kaggle"
  what = "does not exist" if not manual_dir.exists() else (
      "is empty" if not any(manual_dir.iterdir()) else "holds neither FERPlus layout")
  raise ManualDirError(
      f"FERPlus manual dir {manual_dir} {what}. Looked for Microsoft's layout "
      f"({', '.join(f + '/label.csv' for f in MS_FOLDERS.values())} with their PNGs) and for "
      f"Kaggle's ({' or '.join(KAGGLE_PIXELS)} beside {KAGGLE_LABELS}). "
      f"Set --config.data.manual_dir to the folder that holds them.")


def _parse_box(text: str) -> np.ndarray:
  nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]
  if len(nums) != 4:
    return np.array([0, 0, FACE_SIZE, FACE_SIZE], np.float32)
  return np.array(nums, np.float32)


def _check_image(img: np.ndarray | None, what: str, report: Report) -> np.ndarray | None:
  if img is None:
    logging.warning("FERPlus: skipping %s: not a readable image", what)
    report.skipped["unreadable image"] += 1
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
    logging.warning("FERPlus: skipping %s: image is %s, expected %dx%d grey", what,
                    "x".join(map(str, img.shape)), FACE_SIZE, FACE_SIZE)
    report.skipped["wrong image size"] += 1
    return None
  return img


def read_microsoft(folder: pathlib.Path, report: Report) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
  """(name, image [48, 48] uint8, votes [10], box [4]) from one Microsoft split folder."""
  label_csv = folder / "label.csv"
  with open(label_csv, newline="") as f:
    for line_no, row in enumerate(csv.reader(f), 1):
      if not row or not row[0].strip():
        continue
      if len(row) < 12:
        logging.warning("FERPlus: skipping %s line %d: %d fields, expected 12 "
                        "(name, box, ten votes)", label_csv, line_no, len(row))
        report.skipped["malformed label row"] += 1
        continue
      name = row[0].strip()
      try:
        votes = np.array([int(float(v)) for v in row[2:12]], np.int32)
      except ValueError:
        logging.warning("FERPlus: skipping %s line %d: vote counts %s are not numbers",
                        label_csv, line_no, row[2:12])
        report.skipped["malformed label row"] += 1
        continue
      path = folder / name
      if not path.exists():
        logging.warning("FERPlus: skipping %s: listed in %s but missing", path, label_csv)
        report.skipped["missing image"] += 1
        continue
      img = _check_image(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), str(path), report)
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
        logging.warning("FERPlus: skipping %s row %d: %d fields, expected %d (%s); a truncated "
                        "or malformed row", pixels_csv, row_no, len(prow), len(ph), ",".join(ph))
        report_for["train"].skipped["malformed CSV row"] += 1
        continue
      usage = prow[ui].strip()
      split = KAGGLE_USAGE.get(usage)
      if split is None:
        logging.warning("FERPlus: skipping %s row %d: unknown Usage %r", pixels_csv, row_no, usage)
        report_for["train"].skipped["unknown usage"] += 1
        continue
      report = report_for[split]
      name = lrow[ni].strip() if len(lrow) > ni else ""
      if not name:
        report.skipped["no image name (not a face)"] += 1
        continue
      try:
        pix = np.array(prow[pi].split(), np.float64)
        votes = np.array([int(float(lrow[i])) for i in vi], np.int32)
      except (ValueError, IndexError):
        logging.warning("FERPlus: skipping %s row %d (%s): pixels or votes are not numbers",
                        pixels_csv, row_no, name)
        report.skipped["malformed CSV row"] += 1
        continue
      if pix.size != FACE_SIZE * FACE_SIZE:
        logging.warning("FERPlus: skipping %s row %d (%s): %d pixels, expected %d",
                        pixels_csv, row_no, name, pix.size, FACE_SIZE * FACE_SIZE)
        report.skipped["wrong pixel count"] += 1
        continue
      if name in out[split]:
        logging.warning("FERPlus: %s names two rows; the later row (%d) wins", name, row_no)
        report.skipped["repeated name (earlier row dropped)"] += 1
      img = np.clip(pix, 0, 255).astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE)
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
  manual = pathlib.Path(manual_dir).expanduser()
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
