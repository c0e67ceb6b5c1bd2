"""Studies (`--mode=study`): a grid of config overrides crossed with seeds, one ordinary run
each, summarised in WORKDIR/study.csv, study.md and study.png (`<name>.*` given
`config.study.name`).

A study config is an ordinary config with a `study` section (configs/studies/):

    config.study.axes = (("loss.margin", (0.0, 0.01, 0.03)),)  # (dotted key, values) pairs
    config.study.combine = "cross"  # cross: every combination of the axes' values
    #                                 zip: the i-th value of every axis together
    config.study.seeds = (0, 1, 2)  # each cell is run once per seed (config.seed)
    config.study.occlusion = False  # also evaluate each finished run under the occluders
    config.study.labels = ()  # optional: one folder-safe name per cell, in cell order
    config.study.name = "study"  # the summary files' name: WORKDIR/<name>.csv, .md, .png, .json
    config.study.budget_s = 0.0  # > 0: stop after this many seconds (a time-limited machine)

A run's config is the study config without its `study` section, with its cell's overrides and
seed applied (and `data.tfds_dir=""` meaning WORKDIR/tfds, so the dataset is prepared once for
the whole study). It runs in `WORKDIR/<cell>/seed=<seed>/` through `train.train_and_evaluate`,
where `<cell>` is its label or `key=value,...` of its overrides (`loss.margin=0.03/seed=1`);
there it leaves what any run leaves (config.json, checkpoints, metrics.jsonl, eval/) plus
`study_run.json`: its status, the wall time of this study's attempts at it and, when asked, its
occlusion accuracies.

Runs go seed by seed (every cell's seed 0 first), so a study stopped early still covers every
cell. A run is finished when its `study_run.json` says it trained to step S and
`eval/<eval split>.json` holds checkpoint step S: finished runs are skipped, and a run that was
cut resumes from its latest checkpoint, so the same command continues a study after a crash or
across days. A run whose loss became non-finite is recorded as `diverged` and skipped after
that (delete its folder to run it again); SIGTERM saves the run in progress and stops the study.
Turning `occlusion` on for a study whose runs are finished evaluates them under the
occluders (`occlusion.evaluate`) without training them again. With `budget_s` > 0 the study
sends itself SIGTERM after that many seconds: the run in training saves and stops, and no new
run starts (a SIGTERM from outside, between runs, stops it the same way); the same command
continues, so a study fits machines lent for minutes at a time (`bench/gpu.py --study`).

Runs are keyed by their folder, so two studies given one WORKDIR share the runs they both
name (same folder, same config) and keep their own summaries when their `name`s differ: the
shipped ablation and margin studies share the paper model's cell that way. Before anything
trains, every existing run folder's config.json is compared with the config the study would
give it, and a difference (another study's run of the same name, or a changed base config) is
refused, naming the folder and the keys. Paths, plots, logging and multihost settings are not
compared. `study.json` records the study section
and its runs, and is rewritten by each invocation; runs of an earlier study in the same WORKDIR
that this one does not name are left alone and are not in its tables.

After every run the study files are rewritten: `study.csv` (a row per run: its overrides, seed,
status, final and best validation accuracy, occlusion accuracies, mean mu per branch, the
fraction of examples whose hinge is active, steps, wall seconds), `study.md` (per cell: n
finished seeds, mean +- sample standard deviation) and `study.png` (accuracy against the value of
a single numeric axis with error bars, as the paper's Figure 3; otherwise bars per cell).
"""

from __future__ import annotations

import copy
import csv
import json
import pathlib
import os
import signal
import threading
import time
from typing import Any, Sequence

from absl import logging
import ml_collections
import numpy as np

from fer_jax import errors
from fer_jax import files
from fer_jax import grid
from fer_jax import jsonl
from fer_jax.modes import Args
from fer_jax.modes import occlusion
from fer_jax.modes import train as train_lib
from fer_jax import overrides as overrides_lib
from fer_jax import parallel
from fer_jax import plots
from fer_jax import validation

RUN_FILE = "study_run.json"  # in each run folder: status, wall time, occlusion accuracies
# Config keys whose values do not change what a run learns: a run folder written with other
# values of these is still this study's run.
UNCOMPARED = ("data.manual_dir", "data.tfds_dir", "data.worker_count", "data.prefetch",
              "plots", "log_every_steps", "multihost", "predict", "occlusion.fit_cache")


def eval_name(config: ml_collections.ConfigDict) -> str:
  """The name of the evaluation train_and_evaluate writes at the end (eval/<name>.json)."""
  if config.data.eval_list:
    return pathlib.Path(config.data.eval_list).stem
  return config.data.eval_split


def _check_base(config: ml_collections.ConfigDict) -> None:
  if not config.eval_at_end or not (config.data.eval_split or config.data.eval_list):
    raise ValueError("a study reads each run's final evaluation: it needs config.eval_at_end="
                     f"True (got {config.eval_at_end}) and a config.data.eval_split (got "
                     f"{config.data.eval_split!r})")


# ---- files of a run


def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def config_conflicts(run_dir: pathlib.Path, cfg: ml_collections.ConfigDict) -> list[str]:
  """The keys whose value in `run_dir`'s config.json differs from `cfg`'s ("key: was, now"),
  among the keys both have, except `UNCOMPARED` (nothing when the folder has no config.json)."""
  old = _read_json(run_dir / "config.json")
  if old is None:
    return []
  old, new = overrides_lib.flat(old), overrides_lib.flat(json.loads(cfg.to_json_best_effort()))
  skip = lambda k: any(k == u or k.startswith(u + ".") for u in UNCOMPARED)
  return [f"{k} was {old[k]!r}, now {new[k]!r}" for k in sorted(old.keys() & new.keys())
          if not skip(k) and old[k] != new[k]]


def run_status(run_dir: pathlib.Path, name: str, occlusion: bool) -> str:
  """finished | trained (occlusion still to evaluate) | diverged | started | pending."""
  info = _read_json(run_dir / RUN_FILE) or {}
  if info.get("status") == "diverged":
    return "diverged"
  evaluation = _read_json(run_dir / "eval" / f"{name}.json")
  if (info.get("status") == "trained" and evaluation is not None
      and evaluation.get("checkpoint_step") == info.get("step")):
    return "trained" if occlusion and not occlusion_done(info) else "finished"
  started = run_dir.exists() and any(p.name != files.LOCK_FILE for p in run_dir.iterdir())
  return "started" if started else "pending"


# study_run.json's occluded accuracies: "occlusion" under the refit protocol (the headline),
# "occlusion_oracle" under the oracle one, "refit_failed" the fraction of refits that fell back
# to the template, per occluder. A run evaluated before the protocols existed (its
# "occlusion" was the oracle's, and no "occlusion_protocols" says so) is evaluated again.
OCCLUSION_KEYS = {"refit": "occlusion", "oracle": "occlusion_oracle"}


def occlusion_done(info: dict[str, Any]) -> bool:
  return (info.get("occlusion_protocols") == list(OCCLUSION_KEYS)
          and all(info.get(k) is not None for k in OCCLUSION_KEYS.values()))


def read_row(run: grid.Run, run_dir: pathlib.Path, name: str,
             occlusion: bool) -> dict[str, Any]:
  """The run's study.csv row, read from its own files (values None where it has none)."""
  status = run_status(run_dir, name, occlusion)
  info = _read_json(run_dir / RUN_FILE) or {}
  row = dict(run=run.name, **{k: (grid.format_value(v) if isinstance(v, tuple) else v)
                              for k, v in run.overrides})
  row.update(seed=run.seed, status=status, final_accuracy=None, best_accuracy=None)
  if status in ("finished", "trained"):
    evaluation = _read_json(run_dir / "eval" / f"{name}.json")
    row["final_accuracy"] = evaluation["accuracy"]
    metrics = run_dir / "metrics.jsonl"
    evals = [r["accuracy"] for r in (jsonl.read_metrics(metrics) if metrics.exists() else [])
             if r.get("kind") == "eval" and isinstance(r.get("accuracy"), (int, float))]
    row["best_accuracy"] = max(evals + [evaluation["accuracy"]])
    confirmation = _read_json(run_dir / "eval" / "confirmation.json")  # data.holdout > 0
    if confirmation and confirmation.get("checkpoint_step") == info.get("step"):
      row["confirmation_accuracy"] = confirmation["accuracy"]
    if occlusion_done(info):
      for key in (*OCCLUSION_KEYS.values(), "refit_failed"):
        for occluder, value in (info.get(key) or {}).items():
          row[f"{key}/{occluder}"] = value
    for branch, mu in (evaluation.get("mean_branch_weights") or {}).items():
      row[f"mu/{branch}"] = mu
    row["hinge_active"] = evaluation.get("hinge_active")
    row["steps"] = evaluation.get("checkpoint_step")
  elif status == "diverged":
    row["steps"] = info.get("step")
  row["wall_seconds"] = round(info["seconds"], 1) if "seconds" in info else None
  return row


# ---- the study's tables and figure


_TAIL = ("hinge_active", "steps", "wall_seconds")


def _columns(rows: list[dict[str, Any]]) -> list[str]:
  """The run, its overrides, seed, status and accuracies, then occlusion accuracies and mu per
  branch (in first-seen order: runs of one study may have different branches), then `_TAIL`."""
  seen = []
  for row in rows:
    seen += [k for k in row if k not in seen]
  groups = ("occlusion/", "occlusion_oracle/", "refit_failed/", "mu/")
  return ([k for k in seen if not k.startswith(groups) and k not in _TAIL]
          + [k for g in groups for k in seen if k.startswith(g)] + list(_TAIL))


def write_csv(rows: list[dict[str, Any]], path: pathlib.Path) -> None:
  columns = _columns(rows)
  with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, columns, restval="")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else 0.0)


def summarize(rows: list[dict[str, Any]], cell_names: Sequence[str]) -> list[dict[str, Any]]:
  """Per cell, in order: its overrides (from its first row), n finished runs and, for each
  numeric column of the finished runs, the per-seed values."""
  out = []
  for cell in cell_names:
    mine = [r for r in rows if r["run"].startswith(cell + "/")]
    done = [r for r in mine if r["status"] == "finished"]
    metric_keys = [k for k in _columns(done) if k in ("final_accuracy", "best_accuracy",
                                                       "confirmation_accuracy")
                   or k.startswith(("occlusion/", "mu/")) or k == "hinge_active"]
    values = {k: [r[k] for r in done if isinstance(r.get(k), (int, float))] for k in metric_keys}
    out.append(dict(cell=cell, row=mine[0] if mine else {}, n=len(done), runs=len(mine),
                    values=values))
  return out


def _cell_text(values: Sequence[float], percent: bool) -> str:
  if not values:
    return "-"
  mean, std = mean_std(values)
  scale, digits = (100.0, 2) if percent else (1.0, 3)
  text = f"{mean * scale:.{digits}f}"
  return text + (f" ± {std * scale:.{digits}f}" if len(values) > 1 else "")


def markdown(summary: list[dict[str, Any]], axis_keys: Sequence[str], labelled: bool,
             header: str) -> str:
  """study.md: a row per cell, mean ± sample std over its finished seeds."""
  metric_keys = [k for k in _columns([c["values"] for c in summary])
                 if any(k in c["values"] for c in summary)]
  names = {"final_accuracy": "final accuracy (%)", "best_accuracy": "best accuracy (%)",
           "confirmation_accuracy": "confirmation (%)", "hinge_active": "hinge active"}
  titles = (["cell"] if labelled else []) + list(axis_keys) + ["n"] + [
      names.get(k, k + (" (%)" if k.startswith("occlusion/") else "")) for k in metric_keys]
  lines = [header, "", "| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
  for cell in summary:
    cells_ = ([cell["cell"]] if labelled else []) + [
        str(cell["row"].get(k, "")) for k in axis_keys] + [f"{cell['n']}/{cell['runs']}"]
    cells_ += [_cell_text(cell["values"].get(k, []), "accuracy" in k or k.startswith("occ"))
               for k in metric_keys]
    lines.append("| " + " | ".join(cells_) + " |")
  return "\n".join(lines) + "\n"


def write_files(workdir: pathlib.Path, config: ml_collections.ConfigDict,
                runs: Sequence[grid.Run]) -> list[dict[str, Any]]:
  """<name>.csv, .md and .png (study.csv, ... by default) from the runs' own files; returns
  the rows."""
  name, occlusion = eval_name(config), bool(grid.section(config).occlusion)
  stem = grid.study_name(config)
  rows = [read_row(r, workdir / r.name, name, occlusion) for r in runs]
  write_csv(rows, workdir / f"{stem}.csv")
  cell_list = grid.cells(config)
  axis_keys = [k for k, _ in cell_list[0][1]]
  labelled = bool(tuple(grid.section(config).labels or ()))
  summary = summarize(rows, [c for c, _ in cell_list])
  done = sum(r["status"] == "finished" for r in rows)
  header = (f"# Study {stem} in {workdir.name}\n\n{done} of {len(rows)} runs finished: "
            f"{grid.section(config).combine} of "
            f"{', '.join(axis_keys) or 'no axes'}, "
            f"seeds {', '.join(map(str, grid.seeds(config)))}. "
            f"Accuracy on {name} (mean ± sample std over the finished seeds; n = finished/runs "
            f"per cell); a row per run in {stem}.csv.")
  text = markdown(summary, axis_keys, labelled, header)
  files.write_text(workdir / f"{stem}.md", text)
  if done:
    series = {name: [c["values"].get("final_accuracy", []) for c in summary]}
    for key in [k for c in summary for k in c["values"] if k.startswith("occlusion/")]:
      series.setdefault(key.removeprefix("occlusion/"),
                        [c["values"].get(key, []) for c in summary])
    values = [c[1][0][1] if c[1] else None for c in cell_list]
    numeric = len(axis_keys) == 1 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    plots.study_accuracy([c for c, _ in cell_list], series, workdir / f"{stem}.png",
                         x=values if numeric else None, xlabel=axis_keys[0] if numeric else "",
                         title=f"{stem}: final accuracy on {name}"
                         + (" and under each occluder" if len(series) > 1 else "")
                         + ", mean ± std over seeds")
  return rows


# ---- running


def _duration(seconds: float) -> str:
  seconds = int(round(max(seconds, 0)))
  h, rem = divmod(seconds, 3600)
  return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def _occlusion_accuracies(result: dict[str, Any]) -> dict[str, float]:
  return {k: float(v["accuracy"]) for k, v in result.items()
          if isinstance(v, dict) and isinstance(v.get("accuracy"), (int, float))}


def _attempt(cfg: ml_collections.ConfigDict, run_dir: pathlib.Path, info: dict[str, Any],
             status: str, occlusion_lib, main: bool, stop=lambda: False) -> str:
  """Trains (or resumes) one run, then evaluates it under the occluders when `occlusion_lib`
  is given; updates `info` (the run's study_run.json) and returns "done", "diverged" or
  "preempted"."""
  if status != "trained":
    info.update(status="running", attempts=info.get("attempts", 0) + 1)
    if main:
      run_dir.mkdir(parents=True, exist_ok=True)
      files.write_json(run_dir / RUN_FILE, info)
    try:
      result = train_lib.train_and_evaluate(cfg, str(run_dir))
    except errors.NonFiniteLossError as e:
      info.update(status="diverged", error=str(e))
      logging.error("%s diverged: %s", run_dir, e)
      return "diverged"
    if result.get("preempted"):
      return "preempted"
    info.update(status="trained", step=int(result["step"]))
  if occlusion_lib is not None:
    if main:  # what is known so far, should the occlusion evaluation fail
      files.write_json(run_dir / RUN_FILE, info)
    for protocol, key in OCCLUSION_KEYS.items():
      if stop():  # a spent budget: this run stays `trained`, the next call evaluates it
        return "preempted"
      protocol_cfg = copy.deepcopy(cfg)
      protocol_cfg.occlusion.landmarks = protocol
      result = occlusion_lib.evaluate(protocol_cfg, str(run_dir), "latest")
      info[key] = _occlusion_accuracies(result)
      if protocol == "refit":
        info["refit_failed"] = {k: v.get("refit_failed") for k, v in result.items()
                                if v.get("refit_failed") is not None}
    info["occlusion_protocols"] = list(OCCLUSION_KEYS)
  return "done"


class Budget:
  """`study.budget_s`: SIGTERM to this process after that many seconds (> 0); and, while the
  study runs, a SIGTERM between runs stops it before the next (in training, `train.Preemption`
  takes it and saves the run; one that came while a run was being prepared makes that run
  save and stop at its first step; during the occluded evaluations the rest of them is left
  to the next call). `stopped` says whether one came."""

  def __init__(self, seconds: float):
    self.seconds, self.stopped = float(seconds), False
    self._timer, self._previous = None, None

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: the study stops before its next run")
    self.stopped = True

  def __enter__(self) -> "Budget":
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, so no timer (it would kill)
      self._previous = None
      return self
    if self.seconds > 0:
      self._timer = threading.Timer(self.seconds, os.kill, (os.getpid(), signal.SIGTERM))
      self._timer.daemon = True
      self._timer.start()
    return self

  def __exit__(self, *exc) -> None:
    if self._timer is not None:
      self._timer.cancel()
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """`--mode=study`: runs (or continues) every run of the study in `workdir`; returns the
  study.csv rows. `jax.distributed` is started by the caller (`cli.run`)."""
  root = pathlib.Path(workdir).resolve()
  runs = grid.plan(config)
  _check_base(grid.run_config(config, runs[0]))
  want_occlusion = bool(grid.section(config).occlusion)
  occlusion_lib = occlusion if want_occlusion else None
  if (root / "checkpoints").exists():
    raise ValueError(f"--workdir={root} holds a training run (checkpoints/): a study needs a "
                     f"folder of its own, where each run gets a subfolder")
  validation.validate(config)  # every cell's values, before any run trains (not hours later)
  for r in runs:
    conflicts = config_conflicts(root / r.name, grid.run_config(config, r, str(root)))
    if conflicts:
      raise ValueError(
          f"{root / r.name} holds a run with other settings than this study gives it ("
          f"{'; '.join(conflicts[:4])}{'; ...' if len(conflicts) > 4 else ''}): use another "
          f"--workdir, or delete that folder to run it again")
  name, stem = eval_name(config), grid.study_name(config)
  main = parallel.is_main()
  if main:
    previous = _read_json(root / f"{stem}.json")
    if previous and previous.get("runs") != [r.name for r in runs]:
      logging.warning("%s/%s.json described another study (%d runs); its runs that this one "
                      "does not name stay in their folders, outside %s.csv",
                      root, stem, len(previous.get("runs") or []), stem)
    files.write_json(root / f"{stem}.json", dict(
        study=json.loads(config.study.to_json_best_effort()),
        runs=[r.name for r in runs],
        overrides={r.name: {k: v for k, v in r.overrides} | {"seed": r.seed} for r in runs}))

  todo = [r for r in runs if run_status(root / r.name, name, want_occlusion) != "finished"]
  logging.info("study in %s: %d runs, %d finished, %d to run", root, len(runs),
               len(runs) - len(todo), len(todo))
  with Budget(float(grid.section(config).budget_s or 0.0)) as budget:
    rows = _run_all(config, runs, root, name, want_occlusion, occlusion_lib, main, budget,
                    parallel)
  if main and rows is None:
    rows = write_files(root, config, runs)
  if main:
    logging.info("study: wrote %s, %s and %s",
                 *(root / f"{stem}{ext}" for ext in (".csv", ".md", ".png")))
  return rows or []


def _run_all(config, runs, root: pathlib.Path, name: str, want_occlusion: bool, occlusion_lib,
             main: bool, budget: Budget, parallel):
  """The loop of `run`: each run not finished, in order; the last study rows written."""
  rows, fresh, elsewhere = None, [], []
  for i, r in enumerate(runs, 1):
    run_dir = root / r.name
    tag = f"run {i}/{len(runs)}: {r.describe()}"
    if run_status(run_dir, name, want_occlusion) == "finished":
      continue
    if parallel.any_process(budget.stopped):
      logging.warning("the study stopped before run %d/%d%s; the same command continues it",
                      i, len(runs), f" (its budget of {budget.seconds:g} s is spent)"
                      if budget.seconds > 0 else "")
      break
    try:
      lock = parallel.acquire_everywhere(files.RunLock(run_dir))
    except errors.RunLockedError as e:
      logging.warning("%s: skipped here, another process is running it (%s)", tag, e)
      elsewhere.append(r.name)
      continue
    with lock:  # released when this run is done (or fails)
      status = run_status(run_dir, name, want_occlusion)  # it may have finished meanwhile
      if status == "finished":
        continue
      if status == "diverged":
        logging.warning("%s diverged in an earlier attempt: skipped (delete %s to run it "
                        "again)", tag, run_dir)
        continue
      written, outcome, seconds = _run_locked(
          config, r, run_dir, tag, status, runs, want_occlusion, occlusion_lib, main, root,
          lambda: parallel.any_process(budget.stopped))
      rows = written or rows
    if outcome == "preempted":
      logging.warning("%s preempted: the study stops here; the same command continues it", tag)
      break
    fresh.append(seconds)
    row = next((x for x in rows or [] if x["run"] == r.name), {})
    left = sum(run_status(root / x.name, name, want_occlusion) not in ("finished", "diverged")
               for x in runs[i:])
    accuracy = row.get("final_accuracy")
    result = (f"accuracy {accuracy:.4f} (best {row['best_accuracy']:.4f})"
              if isinstance(accuracy, float) else outcome)
    logging.info("%s: %s, %s; %d runs left, ETA %s", tag, result, _duration(seconds), left,
                 _duration(left * float(np.mean(fresh))))
  if elsewhere:
    logging.warning("%d run(s) were left to the other process(es) running them (%s): the "
                    "tables include them once they finish and this command runs again",
                    len(elsewhere), ", ".join(elsewhere))
  return rows


def _run_locked(config, r: grid.Run, run_dir: pathlib.Path, tag: str, status: str, runs,
                want_occlusion: bool, occlusion_lib, main: bool, root: pathlib.Path, stop):
  """One run of the study, its folder locked by the caller: (study rows or None, outcome,
  seconds)."""
  logging.info("%s: %s in %s", tag, "evaluating occlusion" if status == "trained" else
               ("resuming" if status == "started" else "starting"), run_dir)
  info = _read_json(run_dir / RUN_FILE) or {}
  start, outcome, rows = time.time(), "failed", None
  try:
    outcome = _attempt(grid.run_config(config, r, str(root)), run_dir, info, status,
                       occlusion_lib if want_occlusion else None, main, stop)
  finally:
    seconds = time.time() - start
    info["seconds"] = info.get("seconds", 0.0) + seconds
    if main:
      files.write_json(run_dir / RUN_FILE, info)
      rows = write_files(root, config, runs)
  return rows, outcome, seconds


def main(args: Args) -> list[dict[str, Any]]:
  """`--mode=study`."""
  return run(args.config, args.workdir)
