"""switch_cli turns oneDNN on before TensorFlow is imported, unless the user chose."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TensorFlow decided, in a fresh process that imports the application first.
PROBE = ("import switch_cli; from tensorflow.python.util import _pywrap_util_port as port; "
         "print('onednn', port.IsMklEnabled())")


@pytest.mark.parametrize("setting,expected", [(None, "True"), ("0", "False")])
def test_onednn_follows_the_command_unless_the_user_set_it(setting, expected):
  env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
  env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  if setting is not None:
    env["TF_ENABLE_ONEDNN_OPTS"] = setting
  proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"onednn {expected}" in proc.stdout
