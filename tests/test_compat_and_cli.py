"""The compat repair is needed on the pinned TensorFlow, works, and runs at every entry point."""

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
