"""Training, evaluation and inference over TensorFlow's distributed runtime (no TPU).

The placement mesh's devices live in ``tf.distribute.Server`` processes (``switch_cli.worker``);
this process, the client, builds the graph, reads the data, holds the master variables and
writes the checkpoints. One description, in gin, serves both commands:

    switch_cluster.client = "10.0.0.1:2221"          # this process's own server (task 0)
    switch_cluster.workers = ["10.0.0.2:2222", "10.0.0.3:2222"]
    switch_cluster.devices_per_worker = 2            # virtual CPU devices each worker serves

With ``workers`` bound, ``install`` makes mesh-tf's ``utils.run``, in every mode (``train``,
``eval``, ``perplexity_eval``, ``infer``, ``score_*``):

  * check, before anything is built, that every worker answers (a TCP connect, retried for
    ``connect_timeout_secs``, then the workers' device lists, bounded too): a missing worker is
    an error naming its address;
  * take the mesh's devices from the cluster, task-major (``/job:worker/task:0/device:CPU:0``,
    ``.../task:0/device:CPU:1``, ``/job:worker/task:1/...``), in place of
    ``utils.run.mesh_devices``; the mesh must have exactly workers x devices_per_worker slices;
  * point the Estimator's sessions at the client's server. Ops without a job (the input
    pipeline, mesh-tf's master variables, which it places on "cpu:0") then run in the client,
    so the checkpoints are written here, as in a one-process run;
  * bound every wait: each ``Session.run`` by ``step_timeout_secs`` (ConfigProto
    ``operation_timeout_in_ms``), each session's creation (its first run, when the master
    asks every worker for its devices) by ``connect_timeout_secs``; and stop instead of
    "recovering": TensorFlow's MonitoredSession treats Unavailable / Aborted as a
    preemption and recreates its session forever while a worker is down. A failed run is an
    error naming the workers that no longer answer; rerunning the same command once they are
    back resumes from the last checkpoint. Closing the failed session is bounded too.
"""

import contextlib
import dataclasses
import re
import socket
import threading
import time
import weakref
from typing import Optional, Sequence

from absl import logging

import gin
from switch_cli import PreflightError, run_config

CLIENT_JOB = "client"
WORKER_JOB = "worker"
_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")
_TASK_IN_MESSAGE = re.compile(r"/job:worker/(?:replica:\d+/)?task:(\d+)")


class ClusterError(PreflightError):
  """The cluster cannot run, or stopped running, this command; the message names the worker."""


@dataclasses.dataclass(frozen=True)
class Cluster:
  """A checked cluster description (see the module docstring for the gin names)."""
  client: str
  workers: tuple
  devices_per_worker: int = 1
  connect_timeout_secs: float = 20.0
  step_timeout_secs: float = 600.0

  def cluster_spec(self) -> dict:
    """{job name: [address, ...]}, the same in the client and in every worker."""
    return {CLIENT_JOB: [self.client], WORKER_JOB: list(self.workers)}

  def mesh_devices(self) -> list:
    """The placement mesh's devices, worker-major: [workers * devices_per_worker] names."""
    return [f"/job:{WORKER_JOB}/task:{task}/device:CPU:{device}"
            for task in range(len(self.workers)) for device in range(self.devices_per_worker)]

  def describe_worker(self, task: int) -> str:
    return f"worker task {task} at {self.workers[task]}"


def _check_address(name: str, address) -> str:
  if not isinstance(address, str) or not (m := _ADDRESS.match(address)) or not (
      0 < int(m.group("port")) < 65536):
    raise ClusterError(f"{name} = {address!r} is not a HOST:PORT address (e.g. "
                       '"10.0.0.2:2222").')
  return address


@gin.configurable("switch_cluster")
def cluster_from_gin(workers: Sequence[str] = (), client: Optional[str] = None,
                     devices_per_worker: int = 1, connect_timeout_secs: float = 20.0,
                     step_timeout_secs: float = 600.0) -> Optional[Cluster]:
  """The bound cluster, checked; None when no workers are bound (a one-process run)."""
  if not workers:
    return None
  if isinstance(workers, str):
    raise ClusterError(f"switch_cluster.workers = {workers!r} must be a list of HOST:PORT "
                       'addresses, e.g. ["10.0.0.2:2222", "10.0.0.3:2222"].')
  workers = tuple(_check_address(f"switch_cluster.workers[{i}]", w) for i, w in enumerate(workers))
  if client is None:
    raise ClusterError("switch_cluster.workers is bound but switch_cluster.client is not: bind "
                       "the HOST:PORT address the workers reach this process at.")
  _check_address("switch_cluster.client", client)
  repeated = sorted({a for a in (client, *workers) if (client, *workers).count(a) > 1})
  if repeated:
    raise ClusterError(f"switch_cluster: address(es) {', '.join(repeated)} given twice; every "
                       "task of the cluster needs its own HOST:PORT.")
  if isinstance(devices_per_worker, bool) or not isinstance(devices_per_worker, int) or (
      devices_per_worker < 1):
    raise ClusterError(f"switch_cluster.devices_per_worker = {devices_per_worker!r} must be a "
                       "positive integer.")
  for name, value in (("connect_timeout_secs", connect_timeout_secs),
                      ("step_timeout_secs", step_timeout_secs)):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
      raise ClusterError(f"switch_cluster.{name} = {value!r} must be a positive number of "
                         "seconds.")
  return Cluster(client=client, workers=workers, devices_per_worker=devices_per_worker,
                 connect_timeout_secs=float(connect_timeout_secs),
                 step_timeout_secs=float(step_timeout_secs))


def _host_port(address: str):
  host, port = address.rsplit(":", 1)
  return host.strip("[]"), int(port)


def answers(address: str, timeout_secs: float = 2.0) -> bool:
  """True if a TCP connection to address opens within timeout_secs."""
  try:
    with socket.create_connection(_host_port(address), timeout=timeout_secs):
      return True
  except OSError:
    return False


def silent_workers(cluster: Cluster, timeout_secs: float = 2.0) -> list:
  """The tasks of the workers that do not accept a TCP connection now."""
  return [task for task, address in enumerate(cluster.workers)
          if not answers(address, timeout_secs)]


def wait_for_workers(cluster: Cluster) -> None:
  """Returns once every worker accepts a connection; a ClusterError naming the missing ones
  after connect_timeout_secs (workers started just before the client get that long)."""
  deadline = time.monotonic() + cluster.connect_timeout_secs
  while True:
    missing = silent_workers(cluster)
    if not missing:
      return
    if time.monotonic() >= deadline:
      names = "; ".join(cluster.describe_worker(t) for t in missing)
      raise ClusterError(
          f"{names}: no server answers (waited {cluster.connect_timeout_secs:g} s, "
          "switch_cluster.connect_timeout_secs). Start it with: python -m switch_cli.worker "
          "--gin_file=<your cluster gin> --task=N, or fix switch_cluster.workers.")
    time.sleep(0.5)


def check_client_port_free(cluster: Cluster) -> None:
  """A ClusterError if something already listens at the client's address."""
  if answers(cluster.client, timeout_secs=1.0):
    raise ClusterError(f"switch_cluster.client = {cluster.client!r}: something already listens "
                       "there (another client?); this process must serve that address itself.")


def server_config(devices: int = 1):
  """The ConfigProto a cluster task's server is started with: ``devices`` virtual CPUs."""
  import tensorflow.compat.v1 as tf

  return tf.ConfigProto(device_count={"CPU": devices})


# Whether this process started a client server. TensorFlow's teardown of an in-process server
# at interpreter exit can abort the process (SIGABRT, "terminate called after throwing an
# instance of ..."), after a run that finished and saved everything, and more often when a
# session's bounded close left a thread behind; switch_cli.main then leaves with os._exit.
_client_server_started = False


def client_server_started() -> bool:
  return _client_server_started


def start_client_server(cluster: Cluster):
  """This process's own server (job "client", task 0); returns it (its ``target`` is the
  sessions' master)."""
  import tensorflow as tf

  global _client_server_started
  check_client_port_free(cluster)
  _client_server_started = True
  return tf.distribute.Server(tf.train.ClusterSpec(cluster.cluster_spec()), job_name=CLIENT_JOB,
                              task_index=0, config=server_config(), start=True)


def session_config(cluster: Cluster):
  """The sessions' ConfigProto: every run bounded, each session's worker state its own."""
  return run_config.session_config(
      isolate_session_state=True,  # a rerun never sees a dead client's variables on a worker
      operation_timeout_in_ms=int(cluster.step_timeout_secs * 1000))


def check_worker_devices(cluster: Cluster, target: str) -> None:
  """Every mesh device exists in the cluster (a worker started with too few devices would be
  soft-placed elsewhere without a word); the listing is bounded by connect_timeout_secs."""
  import tensorflow.compat.v1 as tf

  found, failure = [], []

  def list_devices():
    try:
      config = tf.ConfigProto(operation_timeout_in_ms=int(cluster.connect_timeout_secs * 1000))
      with tf.Session(target, graph=tf.Graph(), config=config) as session:
        found.extend(d.name for d in session.list_devices())
    except Exception as e:  # noqa: BLE001  (reported below, whatever TensorFlow raised)
      failure.append(e)

  thread = threading.Thread(target=list_devices, daemon=True)
  thread.start()
  thread.join(cluster.connect_timeout_secs)
  if thread.is_alive() or failure:
    missing = silent_workers(cluster) or list(range(len(cluster.workers)))
    why = f"{type(failure[0]).__name__}: {failure[0]}" if failure else (
        f"no answer in {cluster.connect_timeout_secs:g} s")
    raise ClusterError(f"{'; '.join(cluster.describe_worker(t) for t in missing)}: could not "
                       f"list the workers' devices ({why}).")
  have = {_canonical(name) for name in found}
  absent = [d for d in cluster.mesh_devices() if _canonical(d) not in have]
  if absent:
    tasks = sorted({int(_TASK_IN_MESSAGE.search(d).group(1)) for d in absent})
    raise ClusterError(
        f"{'; '.join(cluster.describe_worker(t) for t in tasks)}: serves fewer than "
        f"switch_cluster.devices_per_worker = {cluster.devices_per_worker} CPU devices "
        f"(missing {', '.join(absent)}); start each worker with the same cluster gin.")


def _canonical(device: str) -> str:
  """'/job:worker/replica:0/task:1/device:CPU:0' -> '/job:worker/task:1/device:CPU:0'."""
  return re.sub(r"/replica:\d+", "", device)


def check_mesh_size(cluster: Cluster, mesh_shape) -> None:
  """The mesh (a gin-bound "batch:4"-style string) has one slice per cluster device."""
  import mesh_tensorflow as mtf

  if not isinstance(mesh_shape, str):
    return  # a gin reference (e.g. a TPU topology's shape): mesh-tf checks its size itself
  size = mtf.convert_to_shape(mesh_shape).size
  slots = len(cluster.mesh_devices())
  if size != slots:
    raise ClusterError(
        f"utils.run.mesh_shape = {mesh_shape!r} has {size} slices, but the cluster serves "
        f"{slots} devices ({len(cluster.workers)} workers x switch_cluster.devices_per_worker "
        f"= {cluster.devices_per_worker}); make the two agree.")


def run_config_settings(cluster: Cluster, master: str) -> dict:
  """What a cluster run adds to mesh-tf's RunConfig (which it builds with no master and no
  session settings): the client's master for training and prediction (``infer``, ``eval``,
  ``score_*``) and for ``Estimator.evaluate`` (``perplexity_eval``), the bounded session
  config. (RunConfig's ``session_creation_timeout_secs`` bounds only a non-chief worker's
  wait: the client is the chief; ``_bounded_session_creation`` bounds its wait.)"""
  return {"master": master, "evaluation_master": master,
          "session_config": session_config(cluster)}


@contextlib.contextmanager
def _no_session_recovery():
  """MonitoredSession's recovery off: a worker's failure reaches the caller at once.

  Two lists make Unavailable / Aborted a "preemption" to be absorbed: MonitoredSession's, which
  recreates the session (and waits for the worker without limit), and TPUEstimator's error
  rendezvous', which drops them as "already handled by MonitoredSession", so that ``train``
  returned normally and the command exited 0. Both are emptied for the run.
  """
  from tensorflow.python.training import monitored_session
  from tensorflow_estimator.python.estimator.tpu import error_handling

  recovered, ignored = monitored_session._PREEMPTION_ERRORS, error_handling._IGNORED_ERRORS
  monitored_session._PREEMPTION_ERRORS = error_handling._IGNORED_ERRORS = ()
  try:
    yield
  finally:
    monitored_session._PREEMPTION_ERRORS, error_handling._IGNORED_ERRORS = recovered, ignored


@contextlib.contextmanager
def _bounded_session_creation(cluster: Cluster):
  """A session's first graph extension gives up after connect_timeout_secs.

  TensorFlow creates a distributed session lazily, when its first ``run`` sends the graph to
  the master; the master then asks every worker for its devices and waits for their answers
  without limit (``operation_timeout_in_ms`` does not apply): a worker that died after the
  start-up checks, before a session's first run, would hang the run (and it can die between
  two sessions, e.g. ``eval`` decoding one checkpoint after another). Later extensions of a
  created session do not wait for workers and run unbounded, with no thread of their own.
  """
  import tensorflow.compat.v1 as tf
  from tensorflow.python.client import session as session_lib
  from tensorflow.python.client import pywrap_tf_session as tf_session

  extend = session_lib.BaseSession._extend_graph
  created = weakref.WeakSet()
  timeout_secs = cluster.connect_timeout_secs

  def bounded_extend(session):
    if session in created:
      return extend(session)
    failure = []

    def create():
      try:
        tf_session.ExtendSession(session._session)
      except Exception as e:  # noqa: BLE001  (re-raised in the caller's thread)
        failure.append(e)

    # The graph's run lock is held here, not by the thread: if the thread is left waiting,
    # nothing else in this process waits for it.
    with session.graph._session_run_lock():
      thread = threading.Thread(target=create, daemon=True)
      thread.start()
      thread.join(timeout_secs)
    if thread.is_alive():
      raise tf.errors.DeadlineExceededError(
          None, None, f"session creation: the cluster's master did not answer in "
          f"{timeout_secs:g} s (switch_cluster.connect_timeout_secs)")
    if failure:
      raise failure[0]
    created.add(session)

  session_lib.BaseSession._extend_graph = bounded_extend
  try:
    yield
  finally:
    session_lib.BaseSession._extend_graph = extend


# Closing a session deregisters its graphs on every worker, and TensorFlow's master waits for a
# dead worker's answer without limit: after a worker's failure the Estimator's close would hang.
CLOSE_TIMEOUT_SECS = 10.0


@contextlib.contextmanager
def _bounded_session_close(timeout_secs: float = CLOSE_TIMEOUT_SECS):
  """Session.close gives up (with a warning) after timeout_secs; the process exits anyway."""
  from tensorflow.python.client import session as session_lib

  close = session_lib.BaseSession.close

  def bounded_close(session):
    thread = threading.Thread(target=close, args=(session,), daemon=True)
    thread.start()
    thread.join(timeout_secs)
    if thread.is_alive():
      logging.warning("Session close did not finish in %g s (a worker no longer answers); "
                      "left behind.", timeout_secs)

  session_lib.BaseSession.close = bounded_close
  try:
    yield
  finally:
    session_lib.BaseSession.close = close


def explain_failure(cluster: Cluster, error: Exception, model_dir: str) -> ClusterError:
  """The ClusterError for a run that a worker's failure stopped: the silent workers, else the
  tasks TensorFlow's message names, and the checkpoint a rerun resumes from."""
  tasks = silent_workers(cluster)
  how = "no longer answers"
  if not tasks:
    tasks = sorted({int(t) for t in _TASK_IN_MESSAGE.findall(str(error))
                    if int(t) < len(cluster.workers)})
    how = "failed"
  who = "; ".join(cluster.describe_worker(t) for t in tasks) or (
      f"a worker of {', '.join(cluster.workers)}")
  import tensorflow.compat.v1 as tf

  latest = tf.train.latest_checkpoint(model_dir)
  resume = (f"the last checkpoint is {latest}" if latest else "no checkpoint was saved yet")
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  # TensorFlow's first line is often "Graph execution error:"; the line naming a task says more.
  said = [line for line in lines if line != "Graph execution error:"] or lines or [""]
  first_line = next((line for line in said if "/job:" in line), said[0])
  return ClusterError(
      f"{who}: {how} during the run, which stopped ({type(error).__name__}: {first_line[:300]}). "
      f"{resume.capitalize()}; restart the worker and rerun the same command to resume from it.")


def install(mesh_transformer_main) -> None:
  """Wraps mesh-tf's ``utils.run``: with ``switch_cluster.workers`` bound, the run goes over the
  cluster (module docstring); unbound, only ``switch_run_config``'s settings are added."""
  utils = mesh_transformer_main.utils
  run = utils.run

  def run_maybe_on_cluster(*args, **kwargs):
    settings = run_config.bound_settings()
    cluster = cluster_from_gin()
    if cluster is None:
      with run_config.overridden(utils, settings):
        return run(*args, **kwargs)
    import tensorflow.compat.v1 as tf

    from switch_cli import preflight

    if "session_config" in settings:
      raise ClusterError(
          f"switch_run_config.cpu_devices = {preflight.bound('switch_run_config.cpu_devices')!r}"
          " sets a one-process run's devices; a cluster run's are its workers' "
          "(switch_cluster.devices_per_worker): unbind one of them.")
    check_mesh_size(cluster, preflight.bound("utils.run.mesh_shape"))
    wait_for_workers(cluster)
    server = start_client_server(cluster)
    check_worker_devices(cluster, server.target)
    logging.info("Cluster run: client %s, mesh devices %s", server.target,
                 cluster.mesh_devices())
    kwargs["mesh_devices"] = cluster.mesh_devices()
    try:
      settings.update(run_config_settings(cluster, server.target))
      with run_config.overridden(utils, settings), _no_session_recovery(), \
          _bounded_session_creation(cluster), _bounded_session_close():
        return run(*args, **kwargs)
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.InternalError) as e:
      raise explain_failure(cluster, e, kwargs.get("model_dir", "")) from e

  utils.run = run_maybe_on_cluster
