"""README.md's commands, parsed from the README itself and run as a newcomer runs them: `HOME`
an empty folder, the data dir at its default, FERPlus replaced by the committed sample, /tmp
paths by a temporary folder, and the models shrunk to the tests' size. The README cannot drift
from the code again."""

import json
import pathlib
import re
import shlex
import subprocess
import sys

import runs
from fer_jax import grid
from fer_jax import release
from fer_jax import modes as modes_lib

README = runs.ROOT / "README.md"
# Same flags, tiny model and a couple of steps; template landmarks (dlib is tested elsewhere).
SHRINK = ("--config.num_train_steps=2", "--config.model.depth=10", "--config.model.width=0.125",
          "--config.model.attention_hidden=8", "--config.data.crops.size=24",
          "--config.batch_size=16", "--config.eval_batch_size=32",
          "--config.data.landmarks=template", "--config.plots=False",
          "--config.lowering.conv_impl=xla")  # as configs/test.py: the fastest to compile


def readme_commands() -> list[list[str]]:
  """Every `python3 main.py ...` of README.md's code blocks but the multi-host ones."""
  lines = [l[4:] for l in README.read_text().splitlines() if l.startswith("    ")]
  text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
  commands = []
  for line in text.splitlines():
    for part in line.split("&&"):
      if part.strip().startswith("python3 main.py") and "multihost" not in part:
        commands.append(shlex.split(part.strip(), comments=True)[2:])
  return commands


def test_readme_commands_run_verbatim_for_a_newcomer(tmp_path):
  commands = readme_commands()
  modes = [next((a.split("=", 1)[1] for a in c if a.startswith("--mode=")), "train")
           for c in commands]
  # Every mode has a command here but export (an ONNX run of its own: tests/test_export.py).
  assert set(modes) == set(modes_lib.MODES) - {"export"}, commands
  assert not any("tfds_dir" in a for c in commands for a in c)  # the default data dir
  # The studies (hours of runs) are checked for what they would run: every cell's config
  # builds; tests/test_study.py runs a study end to end through the same code.
  for argv in [c for c, m in zip(commands, modes) if m == "study"]:
    config = runs.config("unused", base=next(a.split("=", 1)[1] for a in argv
                                             if a.startswith("--config=")))
    assert len(grid.plan(config)) >= 9
  home = tmp_path / "home"
  home.mkdir()
  env = {**runs.env(), "HOME": str(home)}
  for argv, mode in zip(commands, modes):
    if mode == "study":
      continue
    # README's /tmp paths first: the checkout itself may live under /tmp.
    argv = [a.replace("/tmp/", f"{tmp_path}/").replace("../shared/data/ferplus", str(runs.SAMPLE))
            for a in argv]
    r = subprocess.run([sys.executable, "main.py", *argv, *SHRINK], capture_output=True,
                       text=True, timeout=300, cwd=runs.ROOT, env=env)
    assert r.returncode == 0, (argv, r.stderr[-3000:])
  assert (home / "tensorflow_datasets" / "fer_plus" / "template").is_dir()
  assert json.loads((tmp_path / "fer_demo" / "eval" / "validation.json").read_text())[
      "num_examples"] == 87
  assert (tmp_path / "fer_demo" / "crops.png").stat().st_size > 10_000
  cpu = json.loads((tmp_path / "fer_cpu" / "eval" / "validation.json").read_text())
  assert cpu["checkpoint_step"] == 2 and cpu["num_examples"] == 87
  plain = json.loads((tmp_path / "fer_plain" / "eval" / "validation.json").read_text())
  assert plain["mean_branch_weights"] == {"face": 1.0} and plain["hinge_active"] is None
  occlusion = json.loads((tmp_path / "fer_cpu" / "eval" / "occlusion_validation.json").read_text())
  assert len(occlusion["occluders"]) == 14
  released = json.loads((tmp_path / "eval_released" / "eval" / "validation.json").read_text())
  default = json.loads((release.model_dir(release.DEFAULT_MODEL) / "release.json").read_text())
  assert released["num_examples"] == 87 and released["checkpoint_step"] == default["step"]
  assert (tmp_path / "pred_released" / "faces.csv").exists()
  summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
  assert summary["frames"] == 2 and summary["faces"] == 2 and summary["checkpoint_step"] == 2
  for where in (runs.ROOT, tmp_path):
    assert not [p for p in pathlib.Path(where).rglob("~") if ".git" not in p.parts], where
