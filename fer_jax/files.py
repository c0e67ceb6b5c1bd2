"""Files a run leaves behind: written whole or not at all, and one writer per run folder.

Atomic writes: the result files written in one go (evaluation and occlusion JSON, plots,
config.json, study tables, predict's summary, tracks and class timelines, release metadata, the
exported model) go to a temporary file in the same folder, flushed to disk (fsync) and renamed
over the old one (`os.replace`), so a process killed mid-write leaves the previous file as it
was, never an empty or half-written one. Logs that grow as a run goes (metrics.jsonl,
predict's faces.jsonl/csv, annotated video) are appended to instead; their readers skip a last
line cut short. A SIGKILL mid-write can leave a `.NAME.tmpPID.ext` file beside the result.

The run-folder lock: `RunLock(folder)` holds WORKDIR/.fer_jax.lock with an exclusive `flock`
while a mode writes there. A second process that asks for it exits with status 2
(`errors.RunLockedError`) naming the holder's pid, command and start time. The kernel releases the
lock when its holder dies, even by SIGKILL; the holder's description stays in the file, so the
next process takes the lock over with a warning naming the run it replaces.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pathlib
import socket
import sys
import tempfile
import time
from typing import Any, Iterator

from absl import logging

from fer_jax import errors

LOCK_FILE = ".fer_jax.lock"


# ---- atomic writes


@contextlib.contextmanager
def atomic_path(path, durable: bool = True) -> Iterator[pathlib.Path]:
  """A temporary path beside `path` (same folder, same suffix, so writers that choose a format
  by the extension keep it) to write; on a clean exit it is renamed over `path` (after an fsync
  when `durable`: the file survives a power cut too, not only a killed process), on an error
  removed. The folder is created if needed."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
  try:
    yield tmp
    if durable:
      fd = os.open(tmp, os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  if durable:
    _fsync_dir(path.parent)


def _fsync_dir(folder: pathlib.Path) -> None:
  """Makes the rename itself durable (best effort: not every filesystem opens folders)."""
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def write_text(path, text: str) -> pathlib.Path:
  """`path.write_text(text)`, atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
  return pathlib.Path(path)


def write_json(path, value: Any, indent: int | None = 1) -> pathlib.Path:
  """`value` as JSON (serialised before anything is opened), atomically."""
  return write_text(path, json.dumps(value, indent=indent) + "\n")


# ---- the run-folder lock


def check_dir(path: pathlib.Path, flag: str, create: bool, writable: bool = True) -> None:
  """A folder that exists (or is created when `create`) and, if `writable`, takes files; else
  an errors.UsageError (FileNotFoundError) naming the flag and the path."""
  if path.exists() and not path.is_dir():
    raise errors.UsageError(f"{flag}={path} is a file, not a folder")
  if not path.exists():
    if not create:
      raise FileNotFoundError(f"{flag}={path} does not exist")
    try:
      path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
      raise errors.UsageError(f"{flag}={path} cannot be created: {e.strerror or e}") from None
  if not writable:
    return
  try:
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    raise errors.UsageError(f"{flag}={path} is not writable: {e.strerror or e}") from None


def describe_holder(info: dict[str, Any]) -> str:
  started = info.get("started")
  when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(
      started, (int, float)) else "?"
  return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
          f"({info.get('command', '?')}), started {when}")


def read_holder(folder) -> dict[str, Any]:
  """What the lock file of `folder` says about its last holder ({} if nothing)."""
  try:
    info = json.loads((pathlib.Path(folder) / LOCK_FILE).read_text() or "{}")
  except (OSError, ValueError):
    return {}
  return info if isinstance(info, dict) else {}


class RunLock:
  """An exclusive lock on a run folder for as long as the `with` block (or until `release`).

  `acquire()` raises errors.RunLockedError when a live process holds it; a description left by a
  holder that died without releasing (SIGKILL, power loss) is taken over with a warning.
  A lock is per open file: a process that asks twice for one folder is refused the second
  time, like any other writer. In a folder this process cannot write, an existing lock file
  is locked read-only (without the holder's description); where there is none, or where the
  filesystem has no `flock`, the folder is used without a lock, with a warning.
  """

  def __init__(self, folder, what: str = ""):
    self.folder = pathlib.Path(folder).resolve()
    self.what = what or " ".join([pathlib.Path(sys.argv[0]).name] + sys.argv[1:])
    self._fd = None
    self.acquired = False  # by `acquire` (with or without a lock file the filesystem allows)

  def _open(self) -> tuple[int | None, bool]:
    """(a descriptor of the lock file or None, whether it is writable)."""
    self.folder.mkdir(parents=True, exist_ok=True)
    path = self.folder / LOCK_FILE
    try:
      return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except OSError as e:
      if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise
      try:
        return os.open(path, os.O_RDONLY), False  # flock needs no write access
      except OSError:
        logging.warning("%s cannot hold a lock file (%s): used without a lock", self.folder,
                        e.strerror or e)
        return None, False

  def acquire(self) -> "RunLock":
    fd, writable = self._open()
    self.acquired = fd is None
    if fd is None:
      return self
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):  # no flock on this filesystem
        logging.warning("%s: the filesystem refuses a lock (%s): used without one",
                        self.folder, e.strerror or e)
        self.acquired = True
        return self
      holder = read_holder(self.folder)
      raise errors.RunLockedError(
          f"{self.folder} is in use by {describe_holder(holder)}: one process writes a run "
          f"folder at a time. Wait for it to finish, stop it (SIGTERM saves and exits), or "
          f"use another --workdir") from None
    self._fd, self.acquired = fd, True
    if not writable:
      return self
    previous = read_holder(self.folder)
    if previous and not (previous.get("pid") == os.getpid() and
                         previous.get("host") == socket.gethostname()):
      logging.warning("%s: took over the lock left by %s, which ended without releasing it "
                      "(killed?)", self.folder, describe_holder(previous))
    info = dict(pid=os.getpid(), host=socket.gethostname(), command=self.what,
                started=time.time())
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    os.fsync(fd)
    return self

  def release(self) -> None:
    self.acquired = False
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)  # released cleanly: nothing for the next holder to warn of
    except OSError:
      pass  # a read-only lock file: nothing was written
    finally:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "RunLock":
    return self if self.acquired else self.acquire()  # taken already (cli.run_lock): held on

  def __exit__(self, *exc) -> None:
    self.release()

