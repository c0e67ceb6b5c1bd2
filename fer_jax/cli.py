"""main.py's flags to a mode: paths expanded and checked, a released model found, the run
folder locked, then the mode of `modes.MODES` called; config files read and checked."""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import os
import pathlib

from absl import logging
import jax
import ml_collections

from fer_jax import checkpoint as ckpt_lib
from fer_jax import errors
from fer_jax import files
from fer_jax import modes
from fer_jax import parallel
from fer_jax import release
from fer_jax import validation

# Every config value that is a path. They, `--workdir`, `--input` and `--output` are expanded
# (`~`, $VARS) here, once, so no module ever sees a raw path: the shell leaves `~` alone in
# `--flag=~/x`.
PATH_KEYS = ("data.manual_dir", "data.tfds_dir", "data.eval_list", "predict.face_alignment_dir",
             "occlusion.fit_cache")


class _QuietThirdParty(logging.logging.Filter):
  """Keeps INFO lines from fer_jax and drops the library chatter (Orbax, TFDS, grain)."""

  def filter(self, record):
    if record.levelno >= logging.logging.WARNING:
      return True
    return "fer_jax" in record.pathname or record.pathname.endswith("main.py")


CACHE_ENV = "FER_JAX_CACHE_DIR"  # where compiled programs are kept; "off" keeps none


def compile_cache_dir(environ=None) -> str | None:
  """JAX's persistent compilation cache for fer_jax's commands: $FER_JAX_CACHE_DIR, else
  $XDG_CACHE_HOME/fer_jax (~/.cache/fer_jax); None when it is "off" or "" (safe to delete at
  any time: what is missing is compiled again)."""
  environ = os.environ if environ is None else environ
  if CACHE_ENV in environ:
    value = environ[CACHE_ENV]
    return None if value in ("", "off") else expand_path(value)
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "fer_jax")


def setup_compile_cache() -> str | None:
  """Turns JAX's persistent compilation cache on (every program, however quick to compile), so
  that a second run of a command starts in seconds; a cache JAX was already given (by
  JAX_COMPILATION_CACHE_DIR, or by the caller) is left as it is. Returns the folder in use."""
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  folder = compile_cache_dir()
  if folder is None:
    return None
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    logging.warning("no compilation cache: %s cannot be created (%s)", folder, e.strerror or e)
    return None
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return folder


def setup_logging() -> None:
  logging.set_verbosity(logging.INFO)
  quiet = _QuietThirdParty()
  for handler in logging.logging.getLogger().handlers + [logging.get_absl_handler().python_handler]:
    handler.addFilter(quiet)


def expand_path(path: str | None) -> str | None:
  """`~` and environment variables expanded; "" and URLs (gs://...) returned as they are."""
  if not path or "://" in path:
    return path
  return os.path.expandvars(os.path.expanduser(path))


def expand_paths(config: ml_collections.ConfigDict) -> None:
  """Expands every `PATH_KEYS` value of `config` in place."""
  for key in PATH_KEYS:
    section, name = key.split(".")
    if section in config and name in config[section]:
      config[section][name] = expand_path(config[section][name])


def config_flag_value(args: list[str], default: str) -> str:
  """The value of `--config` in command-line `args` (before absl parses them)."""
  value = default
  for i, arg in enumerate(args):
    if arg.startswith("--config="):
      value = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(args):
      value = args[i + 1]
  return value


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """`get_config()` (or `get_config(arg)`) of a `--config=path[:arg]` file, as config_flags
  loads it."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_fer_jax_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def config_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every dotted key of `config`, sections and leaves."""
  keys = []
  for key in config.keys():
    keys.append(prefix + key)
    if isinstance(config[key], ml_collections.ConfigDict):
      keys += config_keys(config[key], f"{prefix}{key}.")
  return keys


def unknown_override(args: list[str], config_spec: str) -> str | None:
  """One line naming the first `--config.KEY=...` of `args` whose KEY the config does not
  have, with the nearest valid keys; None if every override names a key."""
  try:
    config = load_config_file(config_spec)
  except Exception:  # pylint: disable=broad-except
    return None
  known = config_keys(config)
  for arg in args:
    if not arg.startswith("--config."):
      continue
    key = arg.removeprefix("--config.").split("=", 1)[0]
    if key in known:
      continue
    parent = key.rpartition(".")[0]
    near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if not near:  # at least the keys of the deepest section that exists
      while parent and parent not in known:
        parent = parent.rpartition(".")[0]
      near = [k for k in known if k.rpartition(".")[0] == parent][:6]
    return (f"unknown config key config.{key} (in {arg}); nearest valid keys: "
            f"{', '.join('config.' + k for k in near)}")
  return None


def raised_in(error: BaseException, path: str) -> BaseException | None:
  """The exception of `error`'s chain that was raised by code in file `path`, if any."""
  path = os.path.realpath(path)
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, SyntaxError) and error.filename and \
        os.path.realpath(error.filename) == path:
      return error
    tb = error.__traceback__
    while tb is not None:
      if os.path.realpath(tb.tb_frame.f_code.co_filename) == path:
        return error
      tb = tb.tb_next
    error = error.__cause__ or error.__context__
  return None


def config_load_error(filename: str, error: BaseException) -> str:
  """One line saying why `--config=filename` could not be loaded."""
  path = pathlib.Path(filename.split(":", 1)[0])
  if not path.exists():
    return f"--config={filename}: {path} does not exist"
  if isinstance(error, SyntaxError):
    return (f"--config={filename}: {path} line {error.lineno}: SyntaxError: {error.msg}")
  return f"--config={filename}: {path} fails to load: {type(error).__name__}: {error}"


def check_checkpoint_flag(which: str) -> str:
  """`--checkpoint` is `latest`, `best` or a step number."""
  if which in ("latest", "best") or which.isdigit():
    return which
  raise errors.UsageError(f"--checkpoint={which} is not a checkpoint: it takes latest, best or a "
                   f"step number (e.g. --checkpoint=1200)")


def check_paths(name: str, mode: modes.Mode, workdir: str | None, output: str | None) -> None:
  """Folders the mode writes into exist (or can be made) and take files: checked before any
  model is built, so a typo costs seconds, not a compile."""
  if workdir and mode.workdir != "optional":
    files.check_dir(pathlib.Path(workdir), "--workdir", create=mode.workdir == "create",
                    writable=mode.workdir != "read")
  if not output or mode.output is None:
    return
  out = pathlib.Path(output)
  if mode.output == "folder":
    files.check_dir(out, "--output", create=True)
    return
  suffix = {"png": None, "onnx": ".onnx"}[mode.output]
  if suffix and out.suffix != suffix:
    raise errors.UsageError(f"--output={out} must end in {suffix}: --mode={name} writes an "
                            f"{mode.output.upper()} model")
  if out.is_dir():
    raise errors.UsageError(f"--output={out} is a folder; --mode={name} writes a "
                            f"{'PNG' if mode.output == 'png' else '.' + mode.output} file")
  files.check_dir(out.parent, "--output's folder", create=True)


def released_model_dir(name: str, mode: modes.Mode, workdir: str | None,
                       model: str | None) -> str | None:
  """The released model's folder when the mode reads a model and no --workdir is given (a
  workdir wins over --model); None otherwise."""
  if model and not mode.released:
    raise errors.UsageError(f"--model={model} is for --mode={'/'.join(modes.RELEASED_MODEL_MODES)}"
                            f", not --mode={name}")
  if workdir or not mode.released:
    if model:
      logging.warning("--model=%s ignored: --workdir=%s is used", model, workdir)
    return None
  path = release.model_dir(model or release.DEFAULT_MODEL)
  logging.info("no --workdir: using the released model %s (%s)", path.name, path)
  return str(path)


# What an evaluation takes from the model's own config unless the command line sets it: a model
# is reported in the mode it was trained and selected in (configs/cpu.py's mirror average).
MODEL_DEFAULTS = ("eval_flip",)
MODEL_DEFAULT_MODES = ("eval", "occlusion")


def explicit_config_keys(argv: list[str]) -> set[str]:
  """The config keys a command line sets (`--config.KEY=VALUE` or `--config.KEY VALUE`)."""
  return {a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")}


def model_defaults(config: ml_collections.ConfigDict, workdir: str,
                   explicit: set[str] | None) -> None:
  """Sets each `MODEL_DEFAULTS` key that `explicit` (the keys the command line set; None:
  unknown, nothing changes) lacks to its value in the model's own config: the newest
  checkpoint's, or a released model's config.json."""
  if explicit is None:
    return
  found = ckpt_lib.newest_saved_config(workdir)
  saved = found[1] if found else None
  if saved is None and release.is_release(workdir):
    saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  for key in MODEL_DEFAULTS:
    if key in explicit or not saved or key not in saved or saved[key] == config[key]:
      continue
    logging.info("%s=%r, the model's own (--config.%s=... to change it)", key, saved[key], key)
    config[key] = saved[key]


def run(name: str, config: ml_collections.ConfigDict, workdir: str | None, *,
        checkpoint: str = "latest", input_path: str | None = None, output: str | None = None,
        model: str | None = None, explicit: set[str] | None = None):
  """`--mode=name` with these flags: checked against the mode's row of `modes.MODES`, then
  its module's `main`. `explicit`: the config keys the command line set (main.py), for
  `model_defaults`."""
  mode = modes.get(name)
  expand_paths(config)
  workdir, input_path, output = map(expand_path, (workdir, input_path, output))
  released = released_model_dir(name, mode, workdir, model)
  validation.validate(config)
  if mode.checkpoint:
    check_checkpoint_flag(checkpoint)
  if released:
    workdir = released
    if name == "eval":  # a released model's folder is not written: results go beside
      output = output or os.path.abspath(f"eval_{pathlib.Path(released).name}")
  elif mode.workdir != "optional":
    workdir = errors.need(workdir, "--workdir", name)
  check_paths(name, mode, None if released else workdir, output)
  if mode.input:
    errors.need(input_path, "--input", name)
  if mode.output_required:
    errors.need(output, "--output", name)
  if name in MODEL_DEFAULT_MODES:
    model_defaults(config, workdir, explicit)
  if mode.distributed:
    parallel.initialize(config.multihost)
  lock = run_lock(mode, None if released else workdir)
  with lock:
    return mode.load().main(modes.Args(config, workdir, checkpoint, input_path, output))


def run_lock(mode: modes.Mode, workdir: str | None) -> contextlib.AbstractContextManager:
  """The lock of `workdir` for a mode that writes there (held by process 0 of a run that spans
  processes, every process told when it is refused), or a no-op. A folder this process may
  not write (export reads a run it cannot write into) is read without a lock, or with the
  lock file locked read-only where one exists (files.RunLock)."""
  if not mode.locks or not workdir:
    return contextlib.nullcontext()
  return parallel.acquire_everywhere(files.RunLock(workdir))
