"""Helpers for tests that run main.py in subprocesses (several processes, kills, exit codes)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "ferplus_sample"


# The run that the subprocess tests share: the tiny test config, 12 steps, a checkpoint every
# 2 steps and an evaluation every 6.
STEPS = 12
REFERENCE_FLAGS = (f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=2",
                   "--config.eval_every_steps=6", "--config.log_every_steps=2")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env() -> dict:
  e = dict(os.environ)
  e["JAX_COMPILATION_CACHE_DIR"] = os.environ.get("FER_JAX_TEST_CACHE",
                                                  "/tmp/fer_jax_test_compile_cache")
  e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
  e["PYTHONUNBUFFERED"] = "1"
  e.pop("XLA_FLAGS", None)
  return e


def command(workdir, tfds_dir, *flags, config="configs/test.py", mode="train"):
  return [sys.executable, str(ROOT / "main.py"), f"--config={ROOT / config}", f"--mode={mode}",
          f"--workdir={workdir}", f"--config.data.manual_dir={SAMPLE}",
          f"--config.data.tfds_dir={tfds_dir}", *flags]


def run(workdir, tfds_dir, *flags, timeout=600, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(command(workdir, tfds_dir, *flags, **kwargs), capture_output=True,
                        text=True, timeout=timeout, cwd=ROOT, env=env())


def start(workdir, tfds_dir, *flags, log=None, **kwargs) -> subprocess.Popen:
  out = open(log, "w") if log else subprocess.DEVNULL
  return subprocess.Popen(command(workdir, tfds_dir, *flags, **kwargs), stdout=out,
                          stderr=subprocess.STDOUT, cwd=ROOT, env=env())


def run_processes(n, workdir, tfds_dir, *flags, timeout=600, **kwargs):
  """n processes of one run, coordinated over 127.0.0.1 with gloo collectives."""
  port = free_port()
  procs = [start(workdir, tfds_dir, *flags, f"--config.multihost.coordinator_address=127.0.0.1:{port}",
                 f"--config.multihost.num_processes={n}", f"--config.multihost.process_id={i}",
                 log=pathlib.Path(workdir).parent / f"{pathlib.Path(workdir).name}.p{i}.log", **kwargs)
           for i in range(n)]
  codes = []
  for p in procs:
    try:
      codes.append(p.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  return codes


def metrics(workdir, kind="train"):
  path = pathlib.Path(workdir) / "metrics.jsonl"
  rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
  return {r["step"]: r for r in rows if r["kind"] == kind}
