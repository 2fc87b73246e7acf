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
    "mtf_switch": set(),  # the library: Mesh-TF layers, routers, converters
    "tasks": set(),  # seqio/T5 task registries
    "switch_cli": {"mtf_switch", "tasks"},  # the application
    "tools": {"mtf_switch", "tasks", "switch_cli"},  # experiment code and commands
    "tests": None,  # anything
}

# (importing file, imported top-level package) -> why it is there and what fixes it.
KNOWN_VIOLATIONS = {
    # Issue 28: tasks import the compat repair through the layer package, which runs the whole
    # of mtf_switch and its patches of mesh-tf; the repair should move where both can import it.
    ("tasks/__init__.py", "mtf_switch"): "issue 28: tasks imports mtf_switch.compat",
    ("tasks/benchmark_files.py", "mtf_switch"): "issue 28: tasks imports mtf_switch.compat",
    ("tasks/benchmark_tasks.py", "mtf_switch"): "issue 28: tasks imports mtf_switch.compat",
    ("tasks/glue.py", "mtf_switch"): "issue 28: tasks imports mtf_switch.compat",
    ("tasks/objectives.py", "mtf_switch"): "issue 28: tasks imports mtf_switch.compat",
    ("tasks/vocab.py", "mtf_switch"): "issue 28: tasks imports mtf_switch.compat",
    # Issue 28: the library forwards `python -m mtf_switch.cli` to the application.
    ("mtf_switch/cli.py", "switch_cli"): "issue 28: the mtf_switch.cli alias imports switch_cli",
    # Found writing this test: a command borrows the tests' tiny HF model builders.
    ("tools/hf_parity_full_size.py", "tests"): "tools imports tests.hf_tiny",
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


def test_the_reader_sees_imports_inside_functions(tmp_path):
  module = tmp_path / "m.py"
  module.write_text("import os\n\ndef f():\n  from switch_cli.main import main\n"
                    "  import tasks.vocab as v\n\nfrom . import sibling\n")
  assert imported_top_levels(module) == {"os", "switch_cli", "tasks"}
