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


@pytest.fixture()
def test_config(prepared):
  from configs import test as test_config_module
  config = test_config_module.get_config()
  config.data.manual_dir = str(SAMPLE)
  config.data.tfds_dir = prepared[0]
  return config
