"""Released models (fer_jax/weights/): written from a run, read back, used without --workdir."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from fer_jax import checkpoint as ckpt_lib
from fer_jax import cli, release
from fer_jax import errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "photos"


def test_release_round_trips_the_run_checkpoint(reference_run, tmp_path):
  cfg_run, var_run, step_run = ckpt_lib.load_checkpoint(str(reference_run))
  release.write(str(reference_run), "tiny32", dtype="float32", root=tmp_path)
  release.write(str(reference_run), "tiny16", root=tmp_path)  # bfloat16, the default
  assert release.available(tmp_path) == ["tiny16", "tiny32"]
  cfg, var, step = release.load("tiny32", root=tmp_path)
  assert step == step_run and cfg.model.to_dict() == cfg_run.model.to_dict()
  assert cfg.data.crops.to_dict() == cfg_run.data.crops.to_dict()
  for a, b in zip(jax.tree.leaves(var), jax.tree.leaves(var_run)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, var16, _ = release.load("tiny16", root=tmp_path)
  for a, b in zip(jax.tree.leaves(var16), jax.tree.leaves(var_run)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=2**-8, atol=1e-30)  # bfloat16 keeps 8 bits
  # The bfloat16 copy is about half the float32 one.
  size = lambda d: sum(f.stat().st_size for f in (tmp_path / d / "variables").rglob("*")
                       if f.is_file())
  assert size("tiny16") < 0.75 * size("tiny32")
  info = json.loads((tmp_path / "tiny16" / "release.json").read_text())
  assert info["step"] == step_run and info["dtype"] == "bfloat16"


def test_eval_without_workdir_uses_the_released_model(reference_run, test_config, tmp_path,
                                                       monkeypatch):
  release.write(str(reference_run), "tiny", dtype="float32", root=tmp_path / "weights")
  monkeypatch.setattr(release, "WEIGHTS_DIR", tmp_path / "weights")
  config = test_config
  config.plots = False
  by_release = cli.run("eval", config, None, model="tiny", output=str(tmp_path / "out"))
  assert (tmp_path / "out" / "eval" / "validation.json").exists()
  by_run = cli.run("eval", config, str(reference_run))
  assert by_release["accuracy"] == by_run["accuracy"]
  assert by_release["checkpoint_step"] == by_run["checkpoint_step"]
  with pytest.raises(FileNotFoundError, match="no released model 'nope'.*available: tiny"):
    cli.run("eval", config, None, model="nope")
  with pytest.raises(errors.UsageError, match="--model=tiny is for"):
    cli.run("train", config, str(tmp_path / "w"), model="tiny")


def test_eval_reports_a_model_in_its_own_mirror_mode_unless_the_command_sets_it(
    reference_run, test_config, tmp_path, monkeypatch):
  """A released model trained and selected with the mirror average (`eval_flip` in its
  config.json) is evaluated with it by default; `--config.eval_flip=...` on the command line
  wins (`cli.explicit_config_keys` reads which keys a command line sets)."""
  folder = release.write(str(reference_run), "tiny", dtype="float32", root=tmp_path / "weights")
  saved = json.loads((folder / "config.json").read_text())
  assert saved["eval_flip"] is False
  (folder / "config.json").write_text(json.dumps(dict(saved, eval_flip=True)))
  monkeypatch.setattr(release, "WEIGHTS_DIR", tmp_path / "weights")
  assert cli.explicit_config_keys(["--mode=eval", "--config.eval_flip=False",
                                   "--config.data.manual_dir=x", "--model=tiny"]) == {
                                       "eval_flip", "data.manual_dir"}
  nll = {}
  for name, flip, explicit in (("own", False, set()), ("told_on", True, {"eval_flip"}),
                               ("told_off", False, {"eval_flip"})):
    config = test_config.copy_and_resolve_references()
    config.plots, config.eval_flip = False, flip
    result = cli.run("eval", config, None, model="tiny", output=str(tmp_path / name),
                     explicit=explicit)
    nll[name] = result["calibration"]["nll"]
  assert nll["own"] == nll["told_on"] != nll["told_off"], nll


def test_the_committed_model_predicts_the_photos_with_no_workdir(tmp_path):
  """The README's promise: predict works out of the box, with no training and no workdir."""
  assert release.DEFAULT_MODEL in release.available(), "the released model is not committed"
  from fer_jax import defaults  # pylint: disable=g-import-not-at-top
  config = defaults.get_config()
  config.predict.landmarks = "dlib"
  summary = cli.run("predict", config, None, input_path=str(PHOTOS), output=str(tmp_path / "o"))
  rows = (tmp_path / "o" / "faces.csv").read_text().splitlines()
  assert len(rows) > 1, summary


@pytest.mark.parametrize("name", release.available())
def test_each_model_card_states_its_own_figures(name, tmp_path):
  """Every figure of a release's validation, occlusion and calibration files appears in its
  MODEL_CARD.md as `release.card_figures` writes it; a changed file shows as missing figures."""
  folder = release.model_dir(name)
  card = (folder / "MODEL_CARD.md").read_text()
  figures = release.card_figures(folder)
  assert len(figures) >= 10 and [f for f in figures if f not in card] == []
  for f in ("validation.json", "release.json", "occlusion_validation.json"):
    if (folder / f).exists():
      shutil.copy(folder / f, tmp_path / f)
  evaluation = json.loads((tmp_path / "validation.json").read_text())
  evaluation["accuracy"] += 0.001
  evaluation["per_class_accuracy"]["sadness"] += 0.002
  (tmp_path / "validation.json").write_text(json.dumps(evaluation))
  missing = [f for f in release.card_figures(tmp_path) if f not in card]
  assert len(missing) == 3, missing  # the accuracy, its face count and sadness's
