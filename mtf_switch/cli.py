"""``python -m mtf_switch.cli``: an alias of ``switch_mesh_transformer`` (``switch_cli``).

The entry point lives in ``switch_cli``, above the layer library and the tasks it composes; this
module only forwards to it, importing it when called, so that ``mtf_switch`` itself never
imports the application.
"""

import sys


def main() -> int:
  from switch_cli.main import main as switch_mesh_transformer

  return switch_mesh_transformer()


if __name__ == "__main__":
  sys.exit(main())
