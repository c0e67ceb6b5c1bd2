"""The package's shape: every module's imports of fer_jax sit at its top (none hidden in a
function), they form no cycle, and they point down: the core (data, models, losses, state,
checkpoint, release, ...) imports no mode and no prediction helper, the prediction helpers
(fer_jax/predict/) import no mode, and nothing but main.py's helper (cli) dispatches to the
modes, which it does through `modes.MODES`. Each module's docstring says its one job."""

import ast
import pathlib


from fer_jax import modes

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "fer_jax"


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.AST) -> list[str]:
  """The fer_jax modules an import statement loads (a name imported from a package counts as
  its submodule when there is one, else as the package)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names if a.name.split(".")[0] == "fer_jax"]
  if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
      node.module.split(".")[0] == "fer_jax":
    return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
            for a in node.names]
  return []


def graph() -> dict[str, set[str]]:
  edges = {}
  for name, path in MODULES.items():
    tree = ast.parse(path.read_text(), str(path))
    edges[name] = {m for node in tree.body for m in imported(node)} - {name}
  return edges


def test_no_project_import_inside_a_function_or_class():
  hidden = []
  for name, path in MODULES.items():
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    hidden += [f"{name} line {node.lineno}: {', '.join(imported(node))}"
               for node in ast.walk(tree) if imported(node) and id(node) not in top]
  assert not hidden, hidden


def test_the_imports_form_no_cycle():
  edges = graph()
  state, cycles = {}, []

  def visit(name, stack):
    state[name] = "open"
    for dep in sorted(edges.get(name, ())):
      if state.get(dep) == "open":
        cycles.append(stack[stack.index(dep):] + [dep])
      elif dep not in state:
        visit(dep, stack + [dep])
    state[name] = "done"

  for name in sorted(edges):
    if name not in state:
      visit(name, [name])
  assert not cycles, cycles


def layer(name: str) -> str:
  if name == "fer_jax.cli":
    return "cli"
  if name.startswith("fer_jax.modes.") :
    return "mode"
  if name.startswith("fer_jax.predict."):
    return "predict"
  return "core"


def test_imports_point_down():
  """core <- predict helpers <- modes <- cli. A core module may read a registry from
  fer_jax/predict/ only if that module imports nothing of fer_jax but fer_jax/predict/ modules
  that import nothing of fer_jax (validation's table of detector names: detectors.py, which
  imports mtcnn.py)."""
  edges = graph()
  allowed = {"core": {"core"}, "predict": {"core", "predict"},
             "mode": {"core", "predict", "mode"}, "cli": {"core", "mode"}}
  wrong = []
  for name, deps in edges.items():
    for dep in deps:
      if dep == "fer_jax.modes":  # the table and Args: imports no mode
        continue
      leaf = lambda m: layer(m) == "predict" and not edges[m]  # pylint: disable=cell-var-from-loop
      if layer(dep) not in allowed[layer(name)] and not (
          layer(name) == "core" and layer(dep) == "predict" and all(map(leaf, edges[dep]))):
        wrong.append(f"{name} ({layer(name)}) imports {dep} ({layer(dep)})")
  assert not wrong, wrong
  assert not edges["fer_jax.modes"] - {"fer_jax.errors"}, edges["fer_jax.modes"]


def test_every_mode_module_has_main_and_every_module_says_its_job():
  for name, mode in modes.MODES.items():
    assert callable(getattr(mode.load(), "main", None)), name
  orphans = {p.stem for p in (PACKAGE / "modes").glob("*.py")} - {"__init__"} - {
      m.module for m in modes.MODES.values()}
  assert not orphans, f"modules in fer_jax/modes/ that no mode runs: {orphans}"
  silent = [name for name, path in MODULES.items()
            if len((ast.get_docstring(ast.parse(path.read_text())) or "").split()) < 6]
  assert not silent, f"modules without a docstring saying their job: {silent}"


def test_the_readme_layout_names_every_module():
  readme = (PACKAGE.parent / "README.md").read_text()
  layout = readme[readme.index("## Layout"):]
  layout = layout[:layout.index("\n## ", 1) if "\n## " in layout[1:] else len(layout)]
  missing = [f"{name} ({path.relative_to(PACKAGE.parent)})" for name, path in MODULES.items()
             if path.name != "__init__.py" and path.name not in layout]
  assert not missing, f"README's Layout section does not name: {missing}"
