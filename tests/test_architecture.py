"""The import rules of docs/ARCHITECTURE.md, read from the source with ``ast`` (nothing imported).

Each layer of the project may import only the project packages its rule allows (third-party
packages are not this test's business). A violation the project knows about and means to fix
is listed in KNOWN_VIOLATIONS and tested as ``xfail(strict=True)``: the fix makes that test
pass, which fails the suite until its entry is removed here.
"""

import ast
import functools
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

# Layer -> the project's top-level packages it may import (besides itself).
ALLOWED_IMPORTS = {
    "mtf_base": set(),  # below every layer: the compat repair, where gin/ is; imports nothing
    "mtf_switch": {"mtf_base"},  # the library: Mesh-TF layers, routers, converters
    "tasks": {"mtf_base"},  # seqio/T5 task registries
    "switch_cli": {"mtf_base", "mtf_switch", "tasks"},  # the application
    # The experiments' code: benchmarks, reproductions, fine-tuning, conversion checks.
    "switch_experiments": {"mtf_base", "mtf_switch", "tasks", "switch_cli"},
    "tools": {"switch_experiments"},  # the commands: each a thin main over switch_experiments
    "tests": None,  # anything
}

# (importing file, imported top-level package) -> why it is there and what fixes it.
KNOWN_VIOLATIONS = {
}


def project_top_levels() -> set:
  """Top-level names of this project's code: packages and modules at the root, tools, tests."""
  names = {"tools", "tests"}
  for path in REPO.iterdir():
    if path.is_dir() and (path / "__init__.py").is_file():
      names.add(path.name)
    elif path.suffix == ".py" and path.is_file():
      names.add(path.stem)
  return names - {"setup", "conftest"}


def imported_top_levels(path: pathlib.Path) -> set:
  """Absolute imports of one file, anywhere in it (functions too), by top-level name."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module.split(".")[0])
  return names


def layer_files(layer: str) -> list:
  root = REPO / layer
  if root.is_dir():
    return sorted(root.rglob("*.py"))
  return [REPO / f"{layer}.py"]


@functools.lru_cache(maxsize=None)
def violations() -> frozenset:
  """(file relative to the repository, forbidden package) for every layer with a rule."""
  project = project_top_levels()
  found = set()
  for layer, allowed in ALLOWED_IMPORTS.items():
    if allowed is None:
      continue
    forbidden = project - allowed - {layer}
    for path in layer_files(layer):
      for name in imported_top_levels(path) & forbidden:
        found.add((path.relative_to(REPO).as_posix(), name))
  return frozenset(found)


def test_every_top_level_package_has_an_import_rule():
  unknown = project_top_levels() - set(ALLOWED_IMPORTS)
  assert not unknown, (
      f"top-level code without an import rule: {sorted(unknown)}; give each a line in "
      "ALLOWED_IMPORTS (tests/test_architecture.py) and a row in docs/ARCHITECTURE.md")


def test_no_import_breaks_a_layer_rule_beyond_the_known_ones():
  unexpected = violations() - set(KNOWN_VIOLATIONS)
  assert not unexpected, (
      "imports against docs/ARCHITECTURE.md's layer rules: "
      + "; ".join(f"{path} imports {name}" for path, name in sorted(unexpected)))


@pytest.mark.parametrize(
    "path,name",
    [pytest.param(path, name, marks=pytest.mark.xfail(strict=True, reason=reason),
                  id=f"{path}->{name}")
     for (path, name), reason in sorted(KNOWN_VIOLATIONS.items())])
def test_known_violation_is_fixed(path, name):
  """Fails while the known violation stands; passes (so strict xfail fails) once it is fixed."""
  assert (path, name) not in violations(), f"{path} still imports {name}"


def _imports(path: pathlib.Path) -> list:
  """(module, imported names) of every absolute import of a file; names is () for `import m`."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(alias.name, ()) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      found.append(("." * node.level + (node.module or ""),
                    tuple(alias.name for alias in node.names)))
  return found


def _defines_main(path: pathlib.Path) -> bool:
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


def thin_command_problems(path: pathlib.Path) -> list:
  """Why tools/X.py is not a thin command over switch_experiments.X's main (empty: it is)."""
  own = f"switch_experiments.{path.stem}"
  problems = []
  project = project_top_levels() | {p.stem for p in (REPO / "tools").glob("*.py")}
  for module, names in _imports(path):
    top = module.split(".")[0]
    if module == own and names == ("main",):
      continue
    if module.startswith(".") or top in project:
      problems.append(f"imports {module}{' ' + ', '.join(names) if names else ''}")
  if (own, ("main",)) not in _imports(path):
    problems.append(f"does not import main from {own}")
  elif not _defines_main(REPO / "switch_experiments" / f"{path.stem}.py"):
    problems.append(f"{own} defines no main()")
  return problems


@pytest.mark.parametrize("path", sorted((REPO / "tools").glob("*.py")), ids=lambda p: p.name)
def test_each_tool_is_a_thin_command_over_the_experiment_package(path):
  problems = thin_command_problems(path)
  assert not problems, f"tools/{path.name}: " + "; ".join(problems)


def test_the_thin_command_check_catches_a_helper_and_a_sibling_import(tmp_path):
  tools = tmp_path / "tools"
  tools.mkdir()
  helper = tools / "no_such_command.py"
  helper.write_text("import table9\nfrom tools import table9\n"
                    "from switch_experiments.repro_runs import train\n")
  assert thin_command_problems(helper) == [
      "imports table9", "imports tools table9", "imports switch_experiments.repro_runs train",
      "does not import main from switch_experiments.no_such_command"]


def test_nothing_edits_sys_path():
  """Commands, tests and packages import the project as installed (or from the root pytest
  puts on the path), never by inserting directories into sys.path."""
  found = []
  for path in (path for layer in sorted(project_top_levels()) for path in layer_files(layer)):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and node.attr == "path"
          and isinstance(node.value, ast.Name) and node.value.id == "sys"):
        found.append(f"{path.relative_to(REPO).as_posix()}:{node.lineno}")
  assert not found, "sys.path used at " + ", ".join(found)


def test_the_reader_sees_imports_inside_functions(tmp_path):
  module = tmp_path / "m.py"
  module.write_text("import os\n\ndef f():\n  from switch_cli.main import main\n"
                    "  import tasks.vocab as v\n\nfrom . import sibling\n")
  assert imported_top_levels(module) == {"os", "switch_cli", "tasks"}


ROOT_NAMES = ("__file__", "REPO", "REPO_ROOT")


def finds_gin_from_its_own_file(path: pathlib.Path) -> bool:
  """Whether the file joins "gin" onto its own ``__file__``, or onto a ``REPO`` root made from
  one, in one path expression (os.path.join or ``/``): how gin/ was found before mtf_base."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

  def is_gin(node):
    return isinstance(node, ast.Constant) and node.value == "gin"

  def names_a_root(node):
    # t5.models.__file__ is t5's; paths.REPO is a root made from a __file__ of ours.
    return any((isinstance(n, ast.Name) and n.id in ROOT_NAMES)
               or (isinstance(n, ast.Attribute) and n.attr in ROOT_NAMES[1:])
               for n in ast.walk(node))

  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("join", "joinpath"):
      if any(is_gin(a) for a in node.args) and any(names_a_root(a) for a in node.args):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
      if (is_gin(node.right) and names_a_root(node.left)):
        return True
  return False


def test_gin_directory_is_found_in_one_place():
  """gin/ is located by mtf_base.paths.gin_dir alone; every other layer asks it."""
  from mtf_base import paths

  finders = sorted(path.relative_to(REPO).as_posix()
                   for layer in sorted(set(ALLOWED_IMPORTS) - {"tests"})
                   for path in layer_files(layer) if finds_gin_from_its_own_file(path))
  assert finders == ["mtf_base/paths.py"], finders
  assert pathlib.Path(paths.gin_dir()) == REPO / "gin"
  assert (REPO / "gin" / "models").is_dir() and (REPO / "gin" / "mesh").is_dir()


def test_the_gin_finder_reader_sees_a_join_with_file(tmp_path):
  module = tmp_path / "m.py"
  module.write_text("import os\nimport t5\n"
                    "A = os.path.join(os.path.dirname(t5.__file__), 'gin')\n")
  assert not finds_gin_from_its_own_file(module)  # another package's gin/, not ours
  module.write_text("import os\n\ndef f():\n"
                    "  return os.path.join(os.path.dirname(__file__), '..', 'gin')\n")
  assert finds_gin_from_its_own_file(module)
  module.write_text("import pathlib\nREPO = pathlib.Path(__file__).parent\n"
                    "GIN = REPO / 'gin'\nTAGS = {'gin': 1}\n")
  assert finds_gin_from_its_own_file(module)
  module.write_text("import os\nREPO = os.path.dirname(__file__)\n"
                    "T5 = [os.path.join(t, 'models', 'gin') for t in ['x']]\n")
  assert not finds_gin_from_its_own_file(module)  # gin/ of another package beside a REPO
  module.write_text("import os\nREPO = os.path.dirname(__file__)\nTAGS = {'gin': 1}\n")
  assert not finds_gin_from_its_own_file(module)  # "gin" as a key, not a path
  module.write_text("import os\nfrom x import paths\nG = os.path.join(paths.REPO, 'gin')\n")
  assert finds_gin_from_its_own_file(module)  # a root someone else made from __file__
