"""Shared fixtures: the committed FERPlus sample, prepared once per session, and tiny configs."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Identical programs (the same tiny model in several tests) compile once per session.
_CACHE = pathlib.Path(os.environ.get("FER_JAX_TEST_CACHE", "/tmp/fer_jax_test_compile_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

SAMPLE = ROOT / "tests" / "data" / "ferplus_sample"
SHARED_FERPLUS = ROOT.parent / "shared" / "data" / "ferplus"


@pytest.fixture(scope="session")
def sample_dir() -> pathlib.Path:
  return SAMPLE


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
  """The sample, prepared with per-image dlib landmarks: (tfds_dir, data sources)."""
  from fer_jax.data import ferplus, pipeline
  tfds_dir = str(tmp_path_factory.mktemp("tfds"))
  ferplus.prepare(str(SAMPLE), tfds_dir, "dlib")
  return tfds_dir, pipeline.data_sources(tfds_dir, "dlib")


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
def reference_run(prepared, tmp_path_factory):
  """`runs.REFERENCE_FLAGS` run once, uninterrupted, by main.py in a subprocess."""
  import runs  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("reference") / "run"
  r = runs.run(workdir, prepared[0], *runs.REFERENCE_FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir
