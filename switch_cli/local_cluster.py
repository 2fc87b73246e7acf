"""Worker processes on this machine, for the tests, tools/bench_cluster.py and a first try.

    with LocalCluster(workers=2, devices_per_worker=2) as local:
      run switch_mesh_transformer with --gin_param=... for each of local.gin_params()

starts ``python -m switch_cli.worker`` processes on 127.0.0.1 ports picked free, waits (bounded)
until each listens, and kills them when the block ends. ``stop(task)`` / ``start(task)`` kill
and restart one worker on its own port (the fault tests). Nothing listens beyond 127.0.0.1.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

from switch_cli import cluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count: int) -> list:
  """``count`` distinct TCP ports on 127.0.0.1 that nothing listened on a moment ago."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


class LocalCluster:
  """A client address and ``workers`` worker processes on 127.0.0.1 (see the module docstring).

  Args:
    log_dir: where each worker's output goes (worker_{task}.log); a temporary one if None.
    start_timeout_secs: how long a worker may take to listen before start() fails.
  """

  def __init__(self, workers: int, devices_per_worker: int, log_dir: Optional[str] = None,
               start_timeout_secs: float = 120.0):
    ports = free_ports(workers + 1)
    self.client = f"127.0.0.1:{ports[0]}"
    self.workers = [f"127.0.0.1:{p}" for p in ports[1:]]
    self.devices_per_worker = devices_per_worker
    self.start_timeout_secs = start_timeout_secs
    if log_dir is None:
      import tempfile

      log_dir = tempfile.mkdtemp(prefix="local_cluster_")
    self.log_dir = log_dir
    self.processes = {}

  def gin_params(self) -> list:
    """The client's (and the workers') ``switch_cluster`` bindings."""
    workers = ", ".join(f'"{w}"' for w in self.workers)
    return [f'switch_cluster.client = "{self.client}"', f"switch_cluster.workers = [{workers}]",
            f"switch_cluster.devices_per_worker = {self.devices_per_worker}"]

  def log_path(self, task: int) -> str:
    return os.path.join(self.log_dir, f"worker_{task}.log")

  def start(self, task: int) -> None:
    """Starts worker ``task`` and returns once it listens; RuntimeError (with its log) if it
    exits or does not listen within start_timeout_secs."""
    command = [sys.executable, "-m", "switch_cli.worker", f"--task={task}"]
    command += [f"--gin_param={p}" for p in self.gin_params()]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    with open(self.log_path(task), "a") as log:
      process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    self.processes[task] = process
    deadline = time.monotonic() + self.start_timeout_secs
    while not cluster.answers(self.workers[task], timeout_secs=1.0):
      if process.poll() is not None or time.monotonic() > deadline:
        self.stop(task)
        with open(self.log_path(task)) as log:
          raise RuntimeError(f"worker {task} ({self.workers[task]}) did not start:\n"
                             f"{log.read()[-3000:]}")
      time.sleep(0.2)

  def stop(self, task: int) -> None:
    """SIGKILLs worker ``task`` (its whole process group) and waits for it (bounded)."""
    process = self.processes.pop(task, None)
    if process is None:
      return
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)

  def __enter__(self):
    try:
      for task in range(len(self.workers)):
        self.start(task)
    except BaseException:
      self.__exit__()
      raise
    return self

  def __exit__(self, *exc_info):
    for task in list(self.processes):
      self.stop(task)
