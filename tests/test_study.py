"""Studies (`--mode=study`): a run per cell and seed, skipped once finished, resumed when cut,
summarised in study.csv, study.md and study.png; bad study configs refused by name."""

import csv
import json
import pathlib
import shutil
import sys
import types

import numpy as np
import pytest

import runs

from configs import test as test_config_module
from configs import studies
from configs.studies import ablation, margin
from configs.studies import test as study_test
from fer_jax import errors
from fer_jax import grid
from fer_jax import jsonl, state as state_lib, validation
from fer_jax.modes import study, train

RUN_NAMES = ["loss.margin=0.0/seed=0", "loss.margin=0.05/seed=0", "loss.margin=0.0/seed=1",
             "loss.margin=0.05/seed=1"]


@pytest.fixture(scope="module")
def study_config(prepared):
  config = study_test.get_config()
  config.data.manual_dir = str(runs.SAMPLE)
  config.data.tfds_dir = prepared[0]
  return config


@pytest.fixture(scope="module")
def finished(study_config, tmp_path_factory):
  """configs/studies/test.py run once in-process: two margins by two seeds, two steps each."""
  workdir = tmp_path_factory.mktemp("study")
  return workdir, study.run(study_config, str(workdir))


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def snapshot(workdir):
  """Every file of every run, with its modification time."""
  return {str(p.relative_to(workdir)): p.stat().st_mtime_ns
          for name in RUN_NAMES for p in (workdir / name).rglob("*") if p.is_file()}


def test_study_runs_each_cell_and_seed_and_summarises_them(finished):
  workdir, rows = finished
  assert [r["run"] for r in rows] == RUN_NAMES
  table = read_csv(workdir / "study.csv")
  assert [r["run"] for r in table] == RUN_NAMES
  by_margin = {}
  for row, csv_row in zip(rows, table):
    run_dir = workdir / row["run"]
    config = json.loads((run_dir / "config.json").read_text())
    assert "study" not in config
    assert config["loss"]["margin"] == row["loss.margin"] == float(csv_row["loss.margin"])
    assert config["seed"] == row["seed"] == int(csv_row["seed"])
    evaluation = json.loads((run_dir / "eval" / "validation.json").read_text())
    evals = [r["accuracy"] for r in jsonl.read(run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert csv_row["status"] == row["status"] == "finished"
    assert float(csv_row["final_accuracy"]) == row["final_accuracy"] == evaluation["accuracy"]
    assert float(csv_row["best_accuracy"]) == row["best_accuracy"] == max(evals)
    assert int(csv_row["steps"]) == row["steps"] == evaluation["checkpoint_step"] == 2
    for branch, mu in evaluation["mean_branch_weights"].items():
      assert float(csv_row[f"mu/{branch}"]) == row[f"mu/{branch}"] == mu
    hinge = evaluation.get("hinge_active")
    assert csv_row["hinge_active"] == ("" if hinge is None else str(hinge))
    info = json.loads((run_dir / study.RUN_FILE).read_text())
    assert info["status"] == "trained" and info["step"] == 2 and info["attempts"] == 1
    assert float(csv_row["wall_seconds"]) == round(info["seconds"], 1) > 0
    by_margin.setdefault(row["loss.margin"], []).append(evaluation["accuracy"])

  md = (workdir / "study.md").read_text()
  assert "4 of 4 runs finished" in md
  for value, accuracies in by_margin.items():
    mean, std = np.mean(accuracies) * 100, np.std(accuracies, ddof=1) * 100
    assert f"| {value} | 2/2 | {mean:.2f} ± {std:.2f} |" in md, md
  assert (workdir / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads((workdir / "study.json").read_text())["runs"] == RUN_NAMES


def test_rerunning_a_finished_study_runs_nothing(finished, study_config, monkeypatch):
  workdir, rows = finished
  before = snapshot(workdir)

  def must_not_train(*args):
    raise AssertionError(f"train_and_evaluate{args} called on a finished study")

  monkeypatch.setattr(train, "train_and_evaluate", must_not_train)
  assert study.run(study_config, str(workdir)) == rows
  assert snapshot(workdir) == before


def test_a_cut_run_resumes_and_only_it(finished, study_config, tmp_path, monkeypatch):
  """A run killed before its final evaluation (as SIGKILL leaves it: no eval json, its
  study_run.json still `running`) is resumed from its checkpoint; the others are skipped."""
  workdir = tmp_path / "study"
  shutil.copytree(finished[0], workdir)
  cut = workdir / RUN_NAMES[1]
  (cut / "eval" / "validation.json").unlink()
  info = json.loads((cut / study.RUN_FILE).read_text())
  (cut / study.RUN_FILE).write_text(json.dumps(dict(info, status="running")))
  others = {n: json.loads((workdir / n / study.RUN_FILE).read_text()) for n in RUN_NAMES}
  calls, real = [], train.train_and_evaluate

  def recording(config, run_dir):
    calls.append(pathlib.Path(run_dir))
    return real(config, run_dir)

  monkeypatch.setattr(train, "train_and_evaluate", recording)
  rows = study.run(study_config, str(workdir))
  assert calls == [cut]
  assert [r["status"] for r in rows] == ["finished"] * 4
  # Resumed at its last step, it evaluates the same checkpoint again: the same accuracy.
  assert rows[1]["final_accuracy"] == finished[1][1]["final_accuracy"]
  assert rows[1]["steps"] == 2
  info = json.loads((cut / study.RUN_FILE).read_text())
  assert info["attempts"] == 2 and info["seconds"] > others[RUN_NAMES[1]]["seconds"]
  for name in RUN_NAMES[:1] + RUN_NAMES[2:]:
    assert json.loads((workdir / name / study.RUN_FILE).read_text()) == others[name]
  assert [r["final_accuracy"] for r in read_csv(workdir / "study.csv")] == [
      str(r["final_accuracy"]) for r in rows]


def test_a_run_folder_with_other_settings_is_refused(finished, study_config, monkeypatch):
  monkeypatch.setattr(train, "train_and_evaluate", None)  # nothing may train
  config = study_config.copy_and_resolve_references()
  config.num_train_steps = 3
  with pytest.raises(ValueError, match=r"loss.margin=0.0/seed=0 holds a run with other "
                                       r"settings .*num_train_steps was 2, now 3"):
    study.run(config, str(finished[0]))


def test_occlusion_is_added_to_finished_runs_without_training(finished, study_config,
                                                                tmp_path, monkeypatch):
  """`study.occlusion` turned on later: each finished run is evaluated under the occluders (a
  stand-in for fer_jax.modes.occlusion here), nothing trains, and the tables gain the columns."""
  workdir = tmp_path / "study"
  shutil.copytree(finished[0], workdir)
  evaluated = []

  def evaluate(config, run_dir, which):
    protocol = config.occlusion.landmarks
    evaluated.append((pathlib.Path(run_dir).relative_to(workdir).as_posix(), which, protocol))
    oracle = protocol == "oracle"
    return {"lower_half": dict(accuracy=0.25 + config.loss.margin + 0.1 * oracle,
                               refit_failed=None if oracle else 0.125),
            "hand": dict(accuracy=0.5, refit_failed=None if oracle else 0.0)}

  fake = types.ModuleType("fer_jax.modes.occlusion")
  fake.evaluate = evaluate
  monkeypatch.setattr(study, "occlusion", fake)
  monkeypatch.setattr(train, "train_and_evaluate", None)  # nothing may train
  config = study_config.copy_and_resolve_references()
  config.study.occlusion = True
  rows = study.run(config, str(workdir))
  # Both landmark protocols, refit (the headline, `occlusion/`) and the oracle.
  assert evaluated == [(name, "latest", p) for name in RUN_NAMES for p in ("refit", "oracle")]
  assert [r["status"] for r in rows] == ["finished"] * 4
  assert [r["occlusion/lower_half"] for r in rows] == [0.25, 0.3, 0.25, 0.3]
  assert [round(r["occlusion_oracle/lower_half"], 6) for r in rows] == [0.35, 0.4, 0.35, 0.4]
  assert [r["refit_failed/lower_half"] for r in rows] == [0.125] * 4
  table = read_csv(workdir / "study.csv")
  assert [float(r["occlusion/hand"]) for r in table] == [0.5] * 4
  md = (workdir / "study.md").read_text()
  assert "occlusion/lower_half (%)" in md and "| 0.05 | 2/2 |" in md
  evaluated.clear()
  study.run(config, str(workdir))
  assert evaluated == []


def test_two_named_studies_in_one_workdir_share_a_run(finished, study_config, tmp_path,
                                                       monkeypatch):
  """A second study (`study.name`) in the same folder reuses the run both name and writes its
  own summary files beside the first's, which stay as they were."""
  workdir = tmp_path / "study"
  shutil.copytree(finished[0], workdir)
  before = {f: (workdir / f).read_bytes() for f in ("study.csv", "study.md", "study.json")}
  trained = []

  def fake(config, run_dir):
    trained.append(pathlib.Path(run_dir).relative_to(workdir).as_posix())
    raise errors.NonFiniteLossError("stand-in: no real training here")

  monkeypatch.setattr(train, "train_and_evaluate", fake)
  config = study_config.copy_and_resolve_references()
  config.study.axes = (("loss.margin", (0.05, 0.1)),)
  config.study.seeds = (0,)
  config.study.name = "wider"
  rows = study.run(config, str(workdir))
  assert trained == ["loss.margin=0.1/seed=0"]  # loss.margin=0.05/seed=0 was finished
  assert [r["status"] for r in rows] == ["finished", "diverged"]
  assert rows[0]["final_accuracy"] == finished[1][1]["final_accuracy"]
  assert [r["run"] for r in read_csv(workdir / "wider.csv")] == [
      "loss.margin=0.05/seed=0", "loss.margin=0.1/seed=0"]
  assert "# Study wider in study" in (workdir / "wider.md").read_text()
  assert json.loads((workdir / "wider.json").read_text())["runs"] == [r["run"] for r in rows]
  assert (workdir / "wider.png").exists()
  assert before == {f: (workdir / f).read_bytes() for f in before}
  config.study.name = "../up"
  with pytest.raises(ValueError, match=r"config.study.name must be a file name.*'../up'"):
    grid.plan(config)


def fake_study(tmp_path, monkeypatch, fake):
  """configs/studies/test.py in `tmp_path` with `fake` in place of train_and_evaluate."""
  calls = []

  def recording(config, run_dir):
    calls.append(pathlib.Path(run_dir).relative_to(tmp_path).as_posix())
    return fake(config, run_dir)

  monkeypatch.setattr(train, "train_and_evaluate", recording)
  return calls, lambda: study.run(study_test.get_config(), str(tmp_path))


def test_a_diverged_run_is_recorded_and_not_retried(tmp_path, monkeypatch):
  def diverge(config, run_dir):
    raise errors.NonFiniteLossError(f"the loss became nan at step 1 (margin {config.loss.margin})")

  calls, run = fake_study(tmp_path, monkeypatch, diverge)
  rows = run()
  assert calls == RUN_NAMES and [r["status"] for r in rows] == ["diverged"] * 4
  assert [r["status"] for r in read_csv(tmp_path / "study.csv")] == ["diverged"] * 4
  assert "0 of 4 runs finished" in (tmp_path / "study.md").read_text()
  info = json.loads((tmp_path / RUN_NAMES[0] / study.RUN_FILE).read_text())
  assert info["status"] == "diverged" and "nan at step 1" in info["error"]
  calls.clear()
  run()
  assert calls == []


def test_two_study_processes_share_the_runs(tmp_path, monkeypatch, caplog):
  """A run whose folder another process holds (its run lock) is left to that process; the
  others run here, and the same command later runs the one left over."""
  def diverge(config, run_dir):
    raise errors.NonFiniteLossError("stands in for a finished run")

  other = runs.hold_lock(tmp_path / RUN_NAMES[1])
  try:
    calls, run = fake_study(tmp_path, monkeypatch, diverge)
    with caplog.at_level("WARNING"):
      rows = run()
    assert calls == RUN_NAMES[:1] + RUN_NAMES[2:]
    assert [r["status"] for r in rows] == ["diverged", "pending", "diverged", "diverged"]
    assert (f"run 2/4: loss.margin=0.05 seed=0: skipped here, another process is running it "
            f"({tmp_path / RUN_NAMES[1]} is in use by pid {other.pid}") in caplog.text
  finally:
    other.kill()
    other.wait()
  calls.clear()
  run()
  assert calls == [RUN_NAMES[1]]


def test_a_spent_budget_stops_the_study_before_its_next_run(tmp_path, monkeypatch):
  """`study.budget_s`: the study sends itself SIGTERM when it is spent; a run in progress
  finishes (in training it would save and stop) and no other starts; the same command goes on."""
  import time  # pylint: disable=g-import-not-at-top

  def slow(config, run_dir):
    time.sleep(0.5)
    raise errors.NonFiniteLossError("stands in for a finished run")

  calls, _ = fake_study(tmp_path, monkeypatch, slow)
  config = study_test.get_config()
  config.study.budget_s = 0.2
  study.run(config, str(tmp_path))
  assert calls == RUN_NAMES[:1]
  config.study.budget_s = 0.0
  study.run(config, str(tmp_path))
  assert calls == RUN_NAMES


def test_gpu_study_smoke_runs_the_ablation_at_another_scale(tmp_path, monkeypatch, capsys):
  """`bench/gpu.py --study=configs/studies/ablation.py --smoke`: the study's path as the
  accelerator runs it (one cell, one seed, the tests' model), both occlusion protocols."""
  runs.bench("gpu", "--study=configs/studies/ablation.py", "--smoke", f"--workdir={tmp_path}",
             monkeypatch=monkeypatch)
  assert (f"configs/studies/ablation.py:smoke in {tmp_path}: 1 of 1 runs finished"
          in capsys.readouterr().out)
  table = read_csv(tmp_path / "ablation.csv")
  assert [row["run"] for row in table] == ["one_branch/seed=0"]
  for row in table:
    assert row["status"] == "finished"
    assert row["occlusion/none"] == row["occlusion_oracle/none"] == row["final_accuracy"]
    # One branch, the whole face: no crop uses landmarks, so refitting them changes nothing.
    names = [k.split("/")[1] for k in row if k.startswith("occlusion/")]
    assert len(names) == 14 and float(row["occlusion/lower_half"]) < 1.0
    assert [row[f"occlusion/{n}"] for n in names] == [row[f"occlusion_oracle/{n}"] for n in names]


def test_sigterm_stops_the_study_after_saving_the_run(tmp_path, monkeypatch):
  calls, run = fake_study(tmp_path, monkeypatch, lambda c, d: dict(preempted=True, step=1))
  rows = run()
  assert calls == RUN_NAMES[:1]
  assert [r["status"] for r in rows] == ["started", "pending", "pending", "pending"]


# ---- the study config, checked before anything trains


def with_study(**section):
  config = study_test.get_config()
  for key, value in section.items():
    config.study[key] = value
  return config


@pytest.mark.parametrize("section, message", [
    (dict(axes=(("loss.margn", (0.1,)),)),
     r"config.study.axes names 'loss.margn', .*config.loss has no 'margn' \(did you mean "
     r"'margin'\?\)"),
    (dict(axes=(("los.margin", (0.1,)),)), r"config has no 'los' \(did you mean 'loss'\?\)"),
    (dict(axes=(("loss", (0.1,)),)), r"names 'loss', a section"),
    (dict(axes=(("seed", (1, 2)),)), r"config.study.seeds"),
    (dict(axes=(("loss.margin", ()),)), r"'loss.margin' needs a non-empty tuple of values"),
    (dict(axes=(("loss.margin", (0.0,)), ("loss.margin", (0.1,)))), r"'loss.margin' twice"),
    (dict(axes=(("loss.margin", (0.0, 0.1)), ("optimizer.learning_rate", (0.1, 0.2, 0.3))),
          combine="zip"),
     r"equal length: loss.margin has 2 values, optimizer.learning_rate has 3 values"),
    (dict(combine="grid"), r"config.study.combine must be one of \('cross', 'zip'\), got 'grid'"),
    (dict(seeds=()), r"config.study.seeds must be a non-empty tuple"),
    (dict(seeds=(0, 0)), r"config.study.seeds repeats a seed"),
    (dict(seeds=(0, 1.5)), r"config.study.seeds: 1.5 is not an integer seed"),
    (dict(axes=(("num_train_steps", (2, 2.5)),)), r"num_train_steps=2.5 does not fit"),
    (dict(labels=("a",)), r"config.study.labels has 1 names for 2 cells"),
    (dict(labels=("a", "a")), r"would share the folder 'a'"),
    (dict(labels=("a", "../b")), r"'../b' is not a folder name"),
    (dict(seed=(0, 1)), r"config.study has no key 'seed' \(did you mean 'seeds'\?\)"),
    (dict(axes=(("optimizer.learning_rate", (0.1, -1.0)),)),
     r"study run optimizer.learning_rate=-1.0: config.optimizer.learning_rate"),
])
def test_bad_study_configs_are_refused_naming_the_culprit(section, message):
  """By `validation.validate`, where every config enters (main.py, study.run): the grid and
  every cell's run config."""
  with pytest.raises(errors.ConfigError, match=message):
    validation.validate(with_study(**section))


def test_a_config_without_a_study_or_a_final_evaluation_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"config.study is missing"):
    study.run(test_config_module.get_config(), str(tmp_path))
  config = with_study()
  config.eval_at_end = False
  with pytest.raises(ValueError, match=r"config.eval_at_end=True"):
    study.run(config, str(tmp_path))
  assert not list(tmp_path.iterdir())


def test_main_refuses_a_config_without_a_study(prepared, tmp_path):
  r = runs.run(tmp_path / "w", prepared[0], mode="study")
  assert r.returncode == 2, r.stderr[-2000:]
  assert "--mode=study needs a study config: config.study is missing" in r.stderr


# ---- the shipped studies


def test_margin_study_is_figure_3_over_three_seeds():
  assert "main.py --mode=study --config=configs/studies/margin.py" in margin.__doc__
  config = margin.get_config()
  planned = grid.plan(config)
  assert len(planned) == 15
  assert sorted({grid.run_config(config, r).loss.margin for r in planned}) == [
      0.0, 0.01, 0.03, 0.05, 0.1]
  assert sorted({r.seed for r in planned}) == [0, 1, 2]
  assert all("study" not in grid.run_config(config, r) for r in planned)


def test_ablation_study_cells():
  assert "main.py --mode=study --config=configs/studies/ablation.py" in ablation.__doc__
  config = ablation.get_config()
  planned = grid.plan(config)
  assert len(planned) == 21 and {r.seed for r in planned} == {0, 1, 2}
  assert [r.name for r in planned[:7]] == [f"{c}/seed=0" for c in ablation.LABELS]
  constrained, five, one, one_long, one_occluded, long_occluded, multi_view = (
      grid.run_config(config, r) for r in planned[:7])
  assert tuple(one.data.crops.branches) == ("face",) and one.model.fusion == "none"
  assert one.loss.constraint_weight == five.loss.constraint_weight == 0.0
  assert len(five.data.crops.branches) == len(constrained.data.crops.branches) == 5
  assert constrained.loss.constraint_weight == 1.0 and constrained.model.fusion == "weighted_sum"
  assert state_lib.constraint_indices(one) is None is state_lib.constraint_indices(five)
  assert state_lib.constraint_indices(constrained) is not None
  assert one.num_epochs == five.num_epochs == constrained.num_epochs == 8
  assert one_long.to_dict() == {**one.to_dict(), "num_epochs": 22.0}
  assert studies.compute_ratio(constrained) == ablation.COMPUTE_RATIO == 2.75
  # At the paper's scale the five branches are all 112 px: A' trains five times as long.
  paper = ablation.get_config("paper")
  long_paper = grid.run_config(paper, grid.plan(paper)[3])
  assert long_paper.num_epochs == 150.0 and long_paper.model.depth == 50
  assert long_paper.optimizer.decay_epochs == 50.0  # the step schedule stretched with it
  assert long_paper.model.dtype == "bfloat16" and long_paper.data.source == "memory"
  assert one.data.crops.occlude_face == 0.0 and one_occluded.data.crops.occlude_face == 0.5
  one_occluded.data.crops.occlude_face = 0.0
  assert one_occluded.to_dict() == one.to_dict()  # A+occ is A but for the occluded faces
  assert long_occluded.data.crops.occlude_face == 0.5  # A'+occ is A' but for them
  long_occluded.data.crops.occlude_face = 0.0
  assert long_occluded.to_dict() == one_long.to_dict()
  # MV is C with the branches' own classifiers, evaluated on the face branch alone.
  assert multi_view.loss.aux_weight == 1.0 and tuple(multi_view.model.inference_branches) == (
      "face",)
  multi_view.loss.aux_weight, multi_view.model.inference_branches = 0.0, ()
  assert multi_view.to_dict() == constrained.to_dict()
  # The paper model's cell is the margin study's 0.03 cell, config for config: one WORKDIR
  # runs it once for both studies.
  shared = [r for r in grid.plan(margin.get_config()) if r.cell == ablation.LABELS[0]]
  assert [r.seed for r in shared] == [0, 1, 2]
  assert grid.run_config(margin.get_config(), shared[0]).to_dict() == constrained.to_dict()
  assert grid.study_name(config) != grid.study_name(margin.get_config())
  for cfg in (one, five):  # the architectures differ: both build (shapes only)
    assert state_lib.count_params(state_lib.abstract_train_state(cfg).params) > 0


# ---- studies/report.py: the claims from the two studies' tables


def test_report_computes_the_claims_from_the_tables(tmp_path):
  """Hand-made ablation.csv and margin.csv: the differences, their standard errors and the
  verdicts in claims.md are the hand-computed ones, and the figure is written."""
  sys.path.insert(0, str(runs.ROOT / "studies"))
  try:
    import report  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  acc = {"one_branch": (0.70, 0.72, 0.74), "one_branch_x2.75": (0.73, 0.74, 0.75),
         "no_constraint": (0.75, 0.76, 0.77), "loss.margin=0.03": (0.76, 0.76, 0.76),
         "one_branch_occlude_face": (0.71, 0.73, 0.75)}
  head = "run,seed,status,final_accuracy,best_accuracy,occlusion/lower_half,mu/eyes,hinge_active\n"
  lines = [f"{cell}/seed={s},{s},finished,{a},{a + 0.01},{a - 0.3},0.5,0.001\n"
           for cell, values in acc.items() for s, a in enumerate(values)]
  (tmp_path / "ablation.csv").write_text(head + "".join(lines))
  margins = {"0.0": (0.74, 0.75), "0.01": (0.75, 0.76), "0.03": (0.76, 0.76, 0.76),
             "0.05": (0.70, 0.71), "0.1": (0.70, 0.70)}
  lines = [f"loss.margin={m}/seed={s},{s},finished,{a},{a},{a - 0.3},0.5,0.0\n"
           for m, values in margins.items() for s, a in enumerate(values)]
  lines.append("loss.margin=0.1/seed=2,2,pending,,,,,\n")
  (tmp_path / "margin.csv").write_text(head + "".join(lines))
  for name in ("ablation", "margin"):
    (tmp_path / f"{name}.md").write_text(f"# {name}\n")
  out = tmp_path / "out"
  report.main([f"--workdir={tmp_path}", f"--output={out}"])
  md = (out / "claims.md").read_text()
  # C - A: 76 - 72 = +4.00; SE = sqrt(0 / 3 + 2^2 / 3) = 1.15 points: supported.
  assert "| five branches with the constraint beat one network (A) (C - A) | +4.00 ± 1.15 | " \
         "supported | +4.00 ± 1.15 | supported |" in md
  # C - B: 76 - 76 = 0: not distinguishable.
  assert "(C - B) | +0.00 ± 0.58 | not distinguishable |" in md
  # C - A': 76 - 74 = +2.00, SE = 1 / sqrt(3) = 0.58: supported.
  assert "(C - A') | +2.00 ± 0.58 | supported |" in md
  # C - A+occ: 76 - 73 = +3.00, SE = 2 / sqrt(3) = 1.15: supported. A+occ - A: +1.00 ± 1.63
  # (sqrt(4/3 + 4/3)): not distinguishable.
  assert "(C - A+occ) | +3.00 ± 1.15 | supported |" in md
  assert "(A+occ - A) | +1.00 ± 1.63 | not distinguishable |" in md
  assert ("| A: one branch | 3/3 | 72.00 ± 2.00 | 73.00 ± 2.00 | 42.00 ± 2.00 | 0.001 ± 0.000 |"
          in md)
  assert "| margin 0.1 | 2/3 | 70.00 ± 0.00 |" in md
  # best 0.03 (76.00) against worst 0.1 (70.00, std 0): +6.00 ± 0.00, but 0.1 has two seeds.
  assert ("best margin (0.03) against the worst (0.1), a pair chosen after seeing the means "
          "(overstates the difference) | +6.00 ± 0.00 | provisional (n = 2) |") in md
  # The F test across the margins (points): means 74.5, 75.5, 76, 70.5, 70 around 73.545 give
  # 71.227 between (over 4 df), 0.5 + 0.5 + 0.5 within (over 11 - 5 = 6): F = 17.807 / 0.25.
  assert ("| the margin matters: one-way analysis of variance across the margins | "
          "F(4, 6) = 71.23, p = 0.000 | provisional (n = 2) |") in md
  # Two groups 1, 2, 3 and 4, 5, 6: 13.5 between (1 df), 4 within (4 df): F = 13.5, the square
  # of their t statistic, whose two-sided p with 4 df is 0.0213.
  f, df1, df2, p = report.anova([[1, 2, 3], [4, 5, 6]])
  assert (df1, df2) == (1, 4) and f == pytest.approx(13.5) and p == pytest.approx(0.0213, abs=1e-4)
  assert report.anova([[1, 1], [1, 1]]) is None  # no spread within: no test
  assert (out / "margin.png").stat().st_size > 10_000
  assert (out / "ablation.csv").read_text() == (tmp_path / "ablation.csv").read_text()


def test_report_holm_welch_and_the_detectable_difference_by_hand(tmp_path):
  """The pre-registered rule: Welch's p, Holm's step-down adjustment and the difference the
  design detects with 80% power, against hand-computed values and a simulation."""
  sys.path.insert(0, str(runs.ROOT / "studies"))
  try:
    import report  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> the last
  # kept at the running maximum 0.06.
  assert report.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert report.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
  # Welch on 1, 2, 3 against 4, 5, 6: difference -3, se sqrt(1/3 + 1/3) = 0.8165, t = -3.674,
  # df 4 (equal variances), two-sided p 0.0213 (as the F test of the same groups above).
  diff, se, df, p = report.welch([1, 2, 3], [4, 5, 6])
  assert (diff, df) == (-3, pytest.approx(4)) and se == pytest.approx(0.81650, abs=1e-5)
  assert p == pytest.approx(0.0213, abs=1e-4)
  # The detectable difference: n = 3, sd 1 on both sides, level 0.05: a t-test with 4 df
  # rejects 80% of the time when the true difference is it (simulated, 40,000 draws).
  d = report.detectable(1.0, 1.0, 3, 0.05)
  rng = np.random.default_rng(0)
  x = rng.normal(d, 1.0, (40000, 3))
  y = rng.normal(0.0, 1.0, (40000, 3))
  t = (x.mean(1) - y.mean(1)) / np.sqrt((x.var(1, ddof=1) + y.var(1, ddof=1)) / 3)
  assert abs(np.mean(np.abs(t) > 2.7764) - 0.8) < 0.01  # t(0.975, 4) = 2.7764
  assert d == pytest.approx(3.0, abs=0.3)  # the normal approximation's 2.29 sd, widened by df 4
  assert report.detectable(1.0, 1.0, 3, 0.05 / 20) > d  # Holm's strictest level: larger
  # The margin study's F test (5 margins, 3 seeds, within sd 1): the difference between two
  # margins, the other three midway, that it finds 80% of the time (simulated, 20,000 draws;
  # F(0.95; 4, 10) = 3.478).
  spread = report.anova_detectable(1.0, 5, 3)
  means = np.array([-spread / 2, 0, 0, 0, spread / 2])
  g = rng.normal(means[None, :, None], 1.0, (20000, 5, 3))
  within = ((g - g.mean(2, keepdims=True)) ** 2).sum((1, 2)) / 10
  between = 3 * ((g.mean(2) - g.mean((1, 2))[:, None]) ** 2).sum(1) / 4
  assert abs(np.mean(between / within > 3.478) - 0.8) < 0.01
  assert 3.2 < spread < 4.0 and report.anova_detectable(2.0, 5, 3) == pytest.approx(2 * spread)
  # A family on hand-made runs: every test has three seeds a side, so Holm applies.
  cols = {"final_accuracy": 0.0, **{f"occlusion/{o}": -0.3 for o in report.OCCLUDERS_13}}
  rows = [dict(run=f"{cell}/seed={s}", status="finished",
               **{k: base + v + 0.01 * s for k, v in cols.items()})
          for cell, base in (("c", 0.70), ("a", 0.76)) for s in range(3)]
  tests, complete = report.family(rows, (("C", "A"),), {"C": "c", "A": "a"})
  assert complete and len(tests) == 5
  assert [t["measure"] for t in tests] == ["clean", "lower half", "upper half", "left half",
                                           report.MEAN_13]
  assert all(t["diff"] == pytest.approx(-6.0) and t["verdict"] == "finding: C below A"
             for t in tests)
