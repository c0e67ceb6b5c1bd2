"""What predict reads: an image, a folder of images or a video, as a stream of frames.

`Input` checks the path when it is opened (a missing file, a folder without images, a file that
decodes as neither an image nor a video fail before any model loads); `Input.frames()` then
decodes in a background thread a few frames ahead of the caller (OpenCV decodes without the
GIL), in order. Time is frame index / fps for a video, None for images.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import queue
import re
import threading
import urllib.parse
from typing import Iterator, TypeVar

from absl import logging
import cv2
import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
DECODE_AHEAD = 8  # frames decoded ahead of the caller
T = TypeVar("T")


@dataclasses.dataclass
class Frame:
  """One frame to process: where it came from, its number and time, the BGR image and the
  stem of its annotated image (`<stem>_annotated.jpg`, unique within the input)."""
  source: str
  index: int
  time: float | None
  image: np.ndarray
  stem: str


def output_stems(files) -> list[str]:
  """The stem of each file's annotated image, distinct (case-insensitively) and deterministic:
  the file's stem when no other file has it, else its name with dots as underscores
  (`a.png` -> `a_png`); such a name that is still taken gets `_2`, `_3`, ... in the order of
  `files`. A unique stem always keeps its name."""
  files = [pathlib.Path(f) for f in files]
  shared: dict[str, int] = {}
  for f in files:
    shared[f.stem.casefold()] = shared.get(f.stem.casefold(), 0) + 1
  unique = [shared[f.stem.casefold()] == 1 for f in files]
  wanted = [f.stem if u else f.name.replace(".", "_") for f, u in zip(files, unique)]
  used = {w.casefold() for w, u in zip(wanted, unique) if u}
  avoid = used | {w.casefold() for w in wanted}
  out = []
  for w, u in zip(wanted, unique):
    stem, n = w, 1
    while not u and (stem.casefold() in used or (n > 1 and stem.casefold() in avoid)):
      n += 1
      stem = f"{w}_{n}"
    used.add(stem.casefold())
    out.append(stem)
  return out


def in_background(items: Iterator[T], ahead: int = DECODE_AHEAD) -> Iterator[T]:
  """Yields what the generator `items` yields, run by a thread up to `ahead` items early.

  An exception of `items` is raised here. Closing this generator (or an exception in the
  caller) stops the thread, closes `items` there (its `finally` runs) and waits for it.
  """
  q: queue.Queue = queue.Queue(maxsize=max(int(ahead), 1))
  stop = threading.Event()
  done = object()

  def put(entry) -> bool:
    while not stop.is_set():
      try:
        q.put(entry, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def work():
    error = None
    try:
      for item in items:
        if not put((item, None)):
          break
    except BaseException as e:  # pylint: disable=broad-except
      error = e
    finally:
      items.close()
    put((done, error))

  thread = threading.Thread(target=work, name="predict-decode", daemon=True)
  thread.start()
  try:
    while True:
      item, error = q.get()
      if item is done:
        if error is not None:
          raise error
        return
      yield item
  finally:
    stop.set()
    thread.join()


def folder_images(folder: pathlib.Path, recursive: bool, exclude: str | None = None
                  ) -> list[pathlib.Path]:
  """The image files of `folder` (and, when `recursive`, of its subfolders, hidden ones and
  `exclude` left out), sorted by their path under `folder`."""
  skip = pathlib.Path(exclude).resolve() if exclude else None
  found = folder.rglob("*") if recursive else folder.iterdir()
  return sorted((p for p in found
                 if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1])
                 and not (skip is not None and p.resolve().is_relative_to(skip))),
                key=lambda p: p.relative_to(folder).parts)


CAMERA = re.compile(r"[0-9]+")
STREAM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # a scheme of two letters or more


def is_live(path: str) -> bool:
  """A camera index (`0`) or a stream address (`rtsp://...`, `http://...`), not a file: a path
  that exists is always the file (`./0` names a file called 0)."""
  path = str(path)
  if os.path.exists(path):
    return False
  return bool(CAMERA.fullmatch(path) or STREAM.match(path))


def display_name(path: str) -> str:
  """How rows, summaries and logs name an input: a camera by its index, a stream by its
  address without the user name and password it may carry."""
  if CAMERA.fullmatch(path):
    return f"camera {path}"
  parts = urllib.parse.urlsplit(path)
  if parts.username or parts.password:
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
  return path


class Input:
  """An image, a folder of images, a video, a camera (`--input=0`) or a stream (`rtsp://`,
  `http://`: anything OpenCV's FFmpeg opens), checked when opened; `frames()` yields them.
  Cameras and streams are videos of unknown length (`live`), named by their index or address.

  After iteration, `stopped_early` says whether a video stopped on a frame that failed to
  decode, and `skipped` lists the images of a folder that could not be read. `name` is what
  the rows and the summary call the input (its path, the address, `camera 0`).
  """

  def __init__(self, path: str, frame_stride: int = 1, recursive: bool = False,
               exclude: str | None = None):
    self.stride = int(frame_stride)
    self.stopped_early = False
    self.skipped: list[str] = []
    self.fps, self.size, self.frame_count = None, None, 0
    self._first = None
    self.live = is_live(path)
    self.name = display_name(str(path)) if self.live else str(path)
    if self.live:
      camera = CAMERA.fullmatch(str(path)) is not None
      self.path = pathlib.Path(f"camera{path}" if camera else "stream")
      self._open_capture(int(path) if camera else str(path), "a stream")
      return
    self.path = pathlib.Path(path)
    if not self.path.exists():
      raise FileNotFoundError(f"input {self.path} does not exist")
    if self.path.is_dir():
      self.kind = "folder"
      self.files = folder_images(self.path, recursive, exclude)
      skip = pathlib.Path(exclude).resolve() if exclude else None
      subfolders = sorted(p.name for p in self.path.iterdir() if p.is_dir()
                          and not p.name.startswith(".") and p.resolve() != skip)
      if subfolders and not recursive:
        shown = ", ".join(subfolders[:5]) + (f" and {len(subfolders) - 5} more"
                                             if len(subfolders) > 5 else "")
        logging.warning("%s: %d subfolder(s) skipped (%s); --config.predict.recursive=True "
                        "reads the images inside them too", self.path, len(subfolders), shown)
      if not self.files:
        raise ValueError(f"input folder {self.path} holds no images "
                         f"(looked for {', '.join(IMAGE_EXTS)}"
                         f"{'' if recursive else ', not inside its subfolders'})")
      self.total = len(self.files)
      # Files of subfolders are named by their path under the input (sub/a.jpg -> sub_a).
      self.stems = output_stems([pathlib.Path("_".join(p.relative_to(self.path).parts))
                                 for p in self.files])
      return
    suffix = self.path.suffix.lower()
    if suffix not in VIDEO_EXTS:
      image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
      if image is not None:
        self.kind, self.files, self.total, self._first = "image", [self.path], 1, image
        self.stems = [self.path.stem]
        return
      if suffix in IMAGE_EXTS:
        raise ValueError(f"cannot read image {self.path}: not a readable image file")
    self._open_capture(str(self.path),
                       "a video" if suffix in VIDEO_EXTS else "an image nor a video")

  def _open_capture(self, target, what: str) -> None:
    """A video, camera or stream through OpenCV: its first frame, rate and length."""
    self.kind = "video"
    self._cap = cv2.VideoCapture(target)
    ok, frame = self._cap.read() if self._cap.isOpened() else (False, None)
    if not ok or frame is None:
      self._cap.release()
      raise ValueError(f"{self.name}: no frames (OpenCV decodes no frame of it as {what})")
    self._first = frame
    fps = self._cap.get(cv2.CAP_PROP_FPS)
    if not fps or not math.isfinite(fps) or fps <= 0:
      logging.warning("%s does not say its frame rate; assuming 25 fps", self.name)
      fps = 25.0
    self.fps = float(fps)
    count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)  # -1 or junk for some cameras and streams
    self.frame_count = 0 if self.live or not count or count < 0 else int(count)
    self.total = -(-self.frame_count // self.stride) if self.frame_count > 0 else None
    self.size = (frame.shape[1], frame.shape[0])
    self.files, self.stems = ([] if self.live else [self.path]), [self.path.stem]

  def close(self) -> None:
    """Releases the video (also done when `frames()` finishes)."""
    if self.kind == "video":
      self._cap.release()

  def frames(self, start: int = 0) -> Iterator[Frame]:
    """The frames, in order, decoded in a background thread; a video's from frame `start` (a
    resumed run's first; the frames before it are demuxed, not decoded)."""
    if start and (self.kind != "video" or self.live):
      raise ValueError(f"{self.name}: only a video file can start at frame {start}")
    return in_background(self._video_frames(start) if self.kind == "video" else self._images())

  def _images(self) -> Iterator[Frame]:
    for i, path in enumerate(self.files):
      image = self._first if (i == 0 and self._first is not None) else cv2.imread(
          str(path), cv2.IMREAD_COLOR)
      if image is None:
        logging.warning("skipped %s: not a readable image file", path)
        self.skipped.append(str(path))
        continue
      name = path.name if self.kind == "image" else str(path.relative_to(self.path))
      yield Frame(name, 0, None, image, self.stems[i])

  def _video_frames(self, start: int = 0) -> Iterator[Frame]:
    cap, index, frame = self._cap, 0, self._first
    self._first = None
    processed = 0  # frames yielded: every stride-th frame of the video
    try:
      if start:
        ok = all(cap.grab() for _ in range(start - 1))
        ok, frame = cap.read() if ok else (False, None)
        if not ok or frame is None:
          logging.warning("%s: frame %d, where the run resumes, does not decode", self.name,
                          start)
          self.stopped_early = True
          return
        index, processed = start, start // self.stride
      while True:
        yield Frame(self.name if self.live else self.path.name, index, index / self.fps, frame,
                    self.path.stem)
        processed += 1
        ok = True
        for _ in range(self.stride - 1):  # skipped frames are demuxed, not decoded
          index += 1
          if not cap.grab():
            ok = False
            break
        if ok:
          index += 1
          try:
            ok, frame = cap.read()
          except cv2.error as e:  # pragma: no cover - depends on the codec
            logging.warning("%s: frame %d failed to decode (%s)", self.name, index, e)
            ok = False
        if not ok or frame is None:
          if self.frame_count and index < self.frame_count:
            logging.warning("%s: frame %d of %d failed to decode; stopping here and keeping "
                            "the %d frames processed", self.name, index, self.frame_count,
                            processed)
            self.stopped_early = True
          return
    finally:
      cap.release()
