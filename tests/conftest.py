"""Shared fixtures: the committed FERPlus sample, prepared once per session, and tiny configs."""

import os
import pathlib

import pytest

import runs

# Read when the first backend starts, so before any test touches jax (runs.XLA_FLAGS says why).
os.environ["XLA_FLAGS"] = runs.XLA_FLAGS
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The tests' programs are tiny and compiled once each: compile time is most of their cost, so
# XLA's optimisation passes are skipped (as flax's own tests do); the subprocesses that tests
# start do the same (runs.env), so in-process and subprocess numbers stay comparable.
jax.config.update("jax_disable_most_optimizations", True)
# Identical programs (the same tiny model in several tests) compile once per session.
_CACHE = pathlib.Path(os.environ.get("FER_JAX_TEST_CACHE", "/tmp/fer_jax_test_compile_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

SAMPLE = ROOT / "tests" / "data" / "ferplus_sample"
# xdist (`--dist loadgroup`) keeps each file's tests on one worker (they share module fixtures)
# but for the files of SPREAD, whose tests share nothing costly: those go out one test at a
# time, last, and fill the gaps at the end of the run. The longest files start first.
SLOW_FIRST = ("test_readme.py", "test_multihost.py", "test_preemption.py", "test_study.py")
SPREAD = ("test_train.py", "test_resnet.py", "test_reliability.py", "test_release.py",
          "test_ablation.py", "test_calibration.py", "test_landmarks.py", "test_losses.py",
          "test_ferplus.py", "test_labels.py", "test_configs.py", "test_mixing.py")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(session, config, items):  # pylint: disable=unused-argument
  rank = {name: i for i, name in enumerate(SLOW_FIRST)}
  last = len(SLOW_FIRST) + 1
  items.sort(key=lambda item: rank.get(item.path.name, last if item.path.name in SPREAD
                                       else len(SLOW_FIRST)))  # stable
  for item in items:
    if item.path.name not in SPREAD:
      item.add_marker(pytest.mark.xdist_group(item.path.name))


SHARED_FERPLUS = ROOT.parent / "shared" / "data" / "ferplus"


@pytest.fixture(scope="session")
def sample_dir() -> pathlib.Path:
  return SAMPLE


def _prepare(tmp_path_factory, landmarks):
  from fer_jax.data import ferplus, pipeline  # pylint: disable=g-import-not-at-top
  tfds_dir = str(tmp_path_factory.mktemp(f"tfds_{landmarks}"))
  ferplus.prepare(str(SAMPLE), tfds_dir, landmarks)
  return tfds_dir, pipeline.data_sources(tfds_dir, landmarks)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
  """The sample, prepared with the template landmarks (configs/test.py's `data.landmarks`):
  (tfds_dir, data sources). What needs fitted landmarks uses `prepared_dlib`."""
  return _prepare(tmp_path_factory, "template")


@pytest.fixture(scope="session")
def prepared_dlib(tmp_path_factory):
  """The sample, prepared with per-image dlib landmarks: (tfds_dir, data sources)."""
  return _prepare(tmp_path_factory, "dlib")


@pytest.fixture(scope="session")
def with_test_split(tmp_path_factory):
  """The sample plus a FER2013Test/ split made of 24 of its validation files (the real test
  split is withheld): (manual dir, tfds_dir)."""
  import shutil  # pylint: disable=g-import-not-at-top
  from fer_jax.data import ferplus
  manual = tmp_path_factory.mktemp("manual_with_test")
  for folder in ("FER2013Train", "FER2013Valid"):
    shutil.copytree(SAMPLE / folder, manual / folder)
  rows = (SAMPLE / "FER2013Valid" / "label.csv").read_text().splitlines()[:24]
  (manual / "FER2013Test").mkdir()
  (manual / "FER2013Test" / "label.csv").write_text("\n".join(rows) + "\n")
  for row in rows:
    name = row.split(",")[0]
    shutil.copy(SAMPLE / "FER2013Valid" / name, manual / "FER2013Test" / name)
  tfds_dir = str(tmp_path_factory.mktemp("tfds_with_test"))
  ferplus.prepare(str(manual), tfds_dir, "template")
  return manual, tfds_dir


@pytest.fixture()
def test_config(prepared):
  from configs import test as test_config_module
  config = test_config_module.get_config()
  config.data.manual_dir = str(SAMPLE)
  config.data.tfds_dir = prepared[0]
  return config


@pytest.fixture(scope="session")
def reference_run(prepared, tmp_path_factory, worker_id):
  """`runs.REFERENCE_FLAGS` run once, uninterrupted, by main.py in a subprocess: once per test
  session, shared by the xdist workers (the first to need it makes it)."""
  import filelock  # pylint: disable=g-import-not-at-top
  import runs  # pylint: disable=g-import-not-at-top
  shared = tmp_path_factory.getbasetemp()
  shared = shared if worker_id == "master" else shared.parent  # the session's, not a worker's
  workdir = shared / "reference" / "run"
  with filelock.FileLock(str(shared / "reference.lock")):
    if not (workdir / "eval" / "validation.json").exists():
      r = runs.run(workdir, prepared[0], *runs.REFERENCE_FLAGS)
      assert r.returncode == 0, r.stderr[-3000:]
  return workdir
