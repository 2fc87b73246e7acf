"""``python -m switch_cli``: the ``switch_mesh_transformer`` command."""

import sys

from switch_cli.main import main

sys.exit(main())
