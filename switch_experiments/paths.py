"""Where the checkout's parts are, for experiments that start commands of their own."""

import os
from typing import Dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS_DIR = os.path.join(REPO, "tools")


def tool(name: str) -> str:
  """The command ``tools/{name}.py``: what a child process runs and a result records."""
  return os.path.join(TOOLS_DIR, f"{name}.py")


def child_env(**extra: str) -> Dict[str, str]:
  """This process's environment for a child command, with this checkout first on PYTHONPATH
  (so the child imports this checkout's packages even where another one is installed)."""
  path = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
  return dict(os.environ, PYTHONPATH=path, **extra)
