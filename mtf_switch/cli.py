"""``python -m mtf_switch.cli`` was an alias of the command line; it now only says where it went.

The command line is the application, ``switch_cli``, above the layer library; the library does
not import it. Run ``switch_mesh_transformer`` or ``python -m switch_cli`` with the same flags.
"""

import sys

MESSAGE = ("python -m mtf_switch.cli is gone: run `python -m switch_cli` (or the "
           "`switch_mesh_transformer` command) with the same flags.")


def main() -> int:
  """Prints MESSAGE on stderr and returns 2 (a usage error): nothing is run."""
  print(f"mtf_switch.cli: error: {MESSAGE}", file=sys.stderr, flush=True)
  return 2


if __name__ == "__main__":
  sys.exit(main())
