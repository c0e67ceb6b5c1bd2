"""JSON-lines logs read back by a run (metrics.jsonl): a line cut short by a SIGKILL is skipped
with a warning naming the file and line, never a reason to refuse to resume."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from absl import logging


def read(path) -> list[dict[str, Any]]:
  """The rows of a JSON-lines file; blank lines are ignored, unreadable ones skipped."""
  path = pathlib.Path(path)
  rows = []
  for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      row = None
    if not isinstance(row, dict):
      logging.warning("%s line %d is not a JSON object (a write cut short?); skipped: %.80r",
                      path, line_no, line)
      continue
    rows.append(row)
  return rows
