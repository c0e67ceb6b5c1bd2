"""JSON-lines logs read back by a run (metrics.jsonl): a line cut short by a SIGKILL, or a row of
the wrong shape (a field of the wrong type, written by hand or by another program), is skipped
with a warning naming the file and line, never a reason to refuse to resume."""

from __future__ import annotations

import json
import numbers
import pathlib
from typing import Any, Mapping

from absl import logging

# The fields every metrics.jsonl row has, and their types (the rest are named numbers).
METRICS = {"step": numbers.Integral, "kind": str}


def _wrong_field(row: dict[str, Any], fields: Mapping[str, type]) -> str | None:
  for name, kind in fields.items():
    value = row.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
      return f"its {name!r} is {value!r}, not a{'n' if kind is numbers.Integral else ''} " \
             f"{'integer' if kind is numbers.Integral else kind.__name__}"
  return None


def read(path, fields: Mapping[str, type] | None = None) -> list[dict[str, Any]]:
  """The rows of a JSON-lines file; blank lines are ignored, unreadable ones and (with
  `fields`: name -> type) rows lacking a field of that type skipped with a warning."""
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
    wrong = _wrong_field(row, fields or {})
    if wrong:
      logging.warning("%s line %d is not a row of this log (%s); skipped: %.80r", path,
                      line_no, wrong, line)
      continue
    rows.append(row)
  return rows


def read_metrics(path) -> list[dict[str, Any]]:
  """The rows of a run's metrics.jsonl that have an integer `step` and a `kind`."""
  return read(path, METRICS)
