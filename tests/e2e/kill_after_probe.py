"""Kills a worker right after the client's start-up checks pass (for the cluster fault test).

Imported by the command line (``--module_import=tests.e2e.kill_after_probe``), it wraps
``switch_cli.cluster.check_worker_devices``, the last check before the run builds its graph
and creates its session: once the check has passed, the process group ``$KILL_AFTER_PROBE_PGID``
(a worker started by the test in a session of its own) is SIGKILLed and a line says so.
"""

import os
import signal
import sys

from switch_cli import cluster

PGID = os.environ.get("KILL_AFTER_PROBE_PGID")
if not PGID:
  raise RuntimeError("tests.e2e.kill_after_probe: set KILL_AFTER_PROBE_PGID to the worker's "
                     "process group id")

_check = cluster.check_worker_devices


def _check_then_kill(*args, **kwargs):
  _check(*args, **kwargs)
  os.killpg(int(PGID), signal.SIGKILL)
  print(f"kill_after_probe: the checks passed; killed process group {PGID}", file=sys.stderr,
        flush=True)


cluster.check_worker_devices = _check_then_kill
