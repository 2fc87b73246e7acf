"""The compat repair is needed on the pinned TensorFlow, works, and runs at every entry point;
it is the only patch importing mtf_switch applies (the command line installs the others)."""

import ast
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_mesh_tensorflow_does_not_import_without_the_repair():
  """Proves the repair is still needed; if this fails, TF or mesh-tf changed and compat.py
  may be deleted."""
  result = _python("import mesh_tensorflow")
  assert result.returncode != 0
  assert "register_tensor_conversion_function" in result.stderr


def test_importing_the_package_repairs_mesh_tensorflow_import():
  result = _python(
      "import mtf_switch, mesh_tensorflow as mtf\n"
      "from mesh_tensorflow.transformer import moe, transformer\n"
      "from mtf_base import compat\n"
      "assert compat.ensure_mesh_tensorflow_importable() is False  # idempotent\n"
      "print('imported', mtf.Dimension('d', 2).size)")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "imported 2" in result.stdout


def test_tasks_get_the_repair_without_the_layer_package():
  """tasks imports t5 (and so mesh_tensorflow) through mtf_base alone: mtf_switch never runs."""
  result = _python(
      "import sys, tasks\n"
      "print('layer modules:', sorted(m for m in sys.modules if m.split('.')[0] == 'mtf_switch'))")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "layer modules: []" in result.stdout


# In a fresh process: import mtf_switch, list what in the patched namespaces belongs to the
# project, then run switch_cli.patches.install (twice) and see what it replaced.
PATCH_PROBE = """
import json, importlib, os
import mtf_switch
from tensorflow.python.framework import ops
from tensorflow.python.client import session
from tensorflow.python.training import monitored_session
from tensorflow_estimator.python.estimator.tpu import error_handling
import mesh_tensorflow
from mesh_tensorflow.transformer import attention, transformer, utils
from t5.models import mesh_transformer_main
from switch_cli import patches

PROJECT = ("mtf_base", "mtf_switch", "switch_cli", "tasks", "tests")
NAMESPACES = {"ops": ops, "BaseSession": session.BaseSession,
              "monitored_session": monitored_session, "error_handling": error_handling,
              "mesh_tensorflow": mesh_tensorflow, "utils": utils, "attention": attention,
              "Unitransformer": transformer.Unitransformer}

def is_project(value):
  # A function by where its code is (functools.wraps copies the wrapped one's __module__),
  # anything else by its class's module.
  code = getattr(value, "__code__", None)
  if code is not None:
    return code.co_filename.startswith(tuple(os.path.join(os.getcwd(), p, "") for p in PROJECT))
  module = value.__module__ if isinstance(value, type) else type(value).__module__
  return str(module).split(".")[0] in PROJECT

def project_owned():
  return sorted(f"{where}.{name}" for where, space in NAMESPACES.items()
                for name, value in vars(space).items()
                if not name.startswith("__") and is_project(value))

def patched():
  return {f"{module}.{name}": id(getattr(importlib.import_module(module), name))
          for module, name in patches.INSTALLED}

report = {"repaired": hasattr(ops, "register_tensor_conversion_function"),
          "owned_after_import": project_owned()}
before = patched()
requested = patches.install(mesh_transformer_main)
after = patched()
again = patches.install(mesh_transformer_main)
report["unchanged_by_install"] = sorted(k for k in before if before[k] == after[k])
report["changed_by_second_install"] = sorted(k for k in after if after[k] != patched()[k])
report["second_install_same_request"] = again is requested
report["owned_after_install"] = project_owned()
print("REPORT", json.dumps(report))
"""


def test_importing_mtf_switch_patches_nothing_but_the_compat_repair():
  result = _python(PATCH_PROBE)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.split("REPORT ", 1)[1])
  assert report["repaired"]
  # Nothing of mesh-tf's, TensorFlow's or the Estimator's is the project's after the import...
  assert report["owned_after_import"] == []
  # ...and every attribute install() replaces was still the original: install changed each.
  assert report["unchanged_by_install"] == []
  # install() replaces exactly what switch_cli/patches.py lists in INSTALLED, once.
  assert report["owned_after_install"] == sorted(
      f"{module.rsplit('.', 1)[-1]}.{name}" for module, name in patches_installed())
  assert report["changed_by_second_install"] == []
  assert report["second_install_same_request"]


def patches_installed():
  """switch_cli.patches.INSTALLED, read from the source (this process imports no TensorFlow)."""
  tree = ast.parse(open(os.path.join(REPO, "switch_cli", "patches.py")).read())
  for node in tree.body:
    if isinstance(node, ast.Assign) and node.targets[0].id == "INSTALLED":
      return ast.literal_eval(node.value)
  raise AssertionError("switch_cli/patches.py defines no INSTALLED")


@pytest.mark.parametrize("flag", ["--helpfull"])
def test_cli_entry_point_runs_t5_mesh_transformer(flag):
  """python -m switch_cli is t5_mesh_transformer with the repair applied first."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, "-m", "switch_cli", flag], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  # absl's help flags print the usage and exit with status 1 by design.
  assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr[-2000:]
  for t5_flag in ("--gin_file", "--gin_param", "--module_import", "--model_dir"):
    assert t5_flag in result.stdout, t5_flag


def test_old_mtf_switch_cli_alias_says_where_the_command_went():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, "-m", "mtf_switch.cli", "--helpfull"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "python -m switch_cli" in result.stderr
  assert "--gin_file" not in result.stdout  # t5's command line did not run
