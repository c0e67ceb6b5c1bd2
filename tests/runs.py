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


# XLA:CPU's older loop emitters compile the tests' programs in half the time of its fusion
# emitters (2.7 s -> 1.2 s for configs/test.py's train step); conftest.py sets the same for the
# in-process tests, so in-process and subprocess numbers stay comparable.
XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env() -> dict:
  e = dict(os.environ)
  e["JAX_COMPILATION_CACHE_DIR"] = os.environ.get("FER_JAX_TEST_CACHE",
                                                  "/tmp/fer_jax_test_compile_cache")
  e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  e["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"  # as conftest.py does in-process
  e["PYTHONUNBUFFERED"] = "1"
  # Subprocesses import this checkout (as the tests do), not whichever one pip installed.
  e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  e["XLA_FLAGS"] = XLA_FLAGS
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


def config(tfds_dir, *flags, base="configs/test.py"):
  """The config main.py builds from `--config=base` and `--config.a.b=v` flags, in-process
  (so a test can call the library where a subprocess would only add start-up time)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("config_under_test", ROOT / base)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config()
  cfg.data.manual_dir, cfg.data.tfds_dir = str(SAMPLE), str(tfds_dir)
  from fer_jax import overrides  # pylint: disable=g-import-not-at-top
  return overrides.apply_flags(cfg, flags)


def damage(workdir, step, how="truncate"):
  """Damages checkpoint `step` of a run as a full disk or a bad copy would: `truncate` cuts
  every array file of its state in half, `metadata` writes garbage over the state's metadata."""
  state = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
  if how == "truncate":
    files = [f for f in state.rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files, state
    for f in files:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
  elif how == "metadata":
    (state / "_METADATA").write_text("garbage{")
  else:
    raise ValueError(how)


def checkpoint_steps(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def hold_lock(folder):
  """A child process that takes `folder`'s run lock (fer_jax/files.py) as "the test holder"
  and sleeps; returned once it holds the lock (SIGKILL it to end)."""
  code = ("import sys, time; from fer_jax import files; "
          "files.RunLock(sys.argv[1], 'the test holder').acquire(); print('held', flush=True); "
          "time.sleep(300)")
  child = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE,
                           text=True, env=env(), cwd=ROOT)
  assert child.stdout.readline().strip() == "held"
  return child


def main(*args: str) -> tuple[int, str]:
  """main.py's flag parsing and dispatch in this process, as `python3 main.py ARGS` runs them:
  (exit status, what it wrote to stderr). For the tests of what main.py answers; those of
  process life (signals, kills, several processes, the working folder) start it as a process,
  and so do those with `--config.KEY=...` overrides: config_flags defines the override flags
  from sys.argv when main.py is imported, once per process."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  module = sys.modules.get("fer_jax_main")
  if module is None:  # once per process: main.py defines absl flags
    spec = importlib.util.spec_from_file_location("fer_jax_main", ROOT / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fer_jax_main"] = module
    spec.loader.exec_module(module)
  if any(a.startswith("--config.") for a in map(str, args)):
    raise ValueError("--config.KEY overrides need a process (runs.run)")
  from absl import logging  # pylint: disable=g-import-not-at-top
  # Parsing (and unparsing) sets absl's level from --verbosity, main() adds cli.setup_logging's
  # filter, and an error line adds a root handler: all put back afterwards, for the tests that
  # run next in this process.
  absl_logger, handler = logging.get_absl_logger(), logging.get_absl_handler().python_handler
  level, filters = absl_logger.level, list(handler.filters)
  root_handlers = list(logging.logging.getLogger().handlers)
  module.FLAGS.unparse_flags()  # every flag back to its default, as in a new process
  err = io.StringIO()
  status = 0
  with contextlib.redirect_stderr(err):
    try:
      module.main(module.parse_flags(["main.py", *map(str, args)]))
    except SystemExit as e:
      status = e.code if isinstance(e.code, int) else 1
    finally:
      module.FLAGS.unparse_flags()
      absl_logger.setLevel(level)
      handler.filters[:] = filters
      logging.logging.getLogger().handlers[:] = root_handlers
  return status, err.getvalue()


def bench(script: str, *args: str, monkeypatch) -> None:
  """`python3 bench/SCRIPT.py ARGS` in this process (the script's `main()`, its argv patched):
  where a subprocess would only add start-up and compile the tests' programs again."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  name = f"fer_jax_bench_{script}"
  module = sys.modules.get(name)
  if module is None:
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
  monkeypatch.setattr(sys, "argv", [f"bench/{script}.py", *args])
  monkeypatch.chdir(ROOT)
  module.main()
