"""switch_cli.cluster's description and messages, without starting TensorFlow servers: bad
bindings fail naming the value, the mesh's devices come from the cluster in order, a failed
run names the worker that stopped answering, and run settings reach mesh-tf's RunConfig."""

import socket

import pytest

import gin
from switch_cli import PreflightError, cluster, run_config


def described(**bindings):
  gin.clear_config()
  for name, value in bindings.items():
    gin.bind_parameter(f"switch_cluster.{name}", value)
  try:
    return cluster.cluster_from_gin()
  finally:
    gin.clear_config()


def test_no_workers_bound_is_a_one_process_run():
  assert described() is None


def test_mesh_devices_are_worker_major_over_the_cluster():
  c = described(client="10.0.0.1:2221", workers=["10.0.0.2:2222", "10.0.0.3:2222"],
                devices_per_worker=2)
  assert c.cluster_spec() == {"client": ["10.0.0.1:2221"],
                              "worker": ["10.0.0.2:2222", "10.0.0.3:2222"]}
  assert c.mesh_devices() == ["/job:worker/task:0/device:CPU:0", "/job:worker/task:0/device:CPU:1",
                              "/job:worker/task:1/device:CPU:0", "/job:worker/task:1/device:CPU:1"]


@pytest.mark.parametrize("bindings, named", [
    ({"workers": ["10.0.0.2:2222"]}, "switch_cluster.client is not"),
    ({"workers": "10.0.0.2:2222", "client": "10.0.0.1:1"}, "must be a list"),
    ({"workers": ["10.0.0.2"], "client": "10.0.0.1:1"}, "switch_cluster.workers[0] = '10.0.0.2'"),
    ({"workers": ["h:1"], "client": "h:99999"}, "switch_cluster.client = 'h:99999'"),
    ({"workers": ["h:1", "h:1"], "client": "h:2"}, "h:1 given twice"),
    ({"workers": ["h:1"], "client": "h:2", "devices_per_worker": 0}, "devices_per_worker = 0"),
    ({"workers": ["h:1"], "client": "h:2", "step_timeout_secs": -1}, "step_timeout_secs = -1"),
])
def test_a_bad_binding_is_an_error_naming_it(bindings, named):
  with pytest.raises(PreflightError) as raised:
    described(**bindings)
  assert named in str(raised.value)


def test_a_mesh_of_another_size_than_the_cluster_is_refused():
  c = described(client="h:1", workers=["h:2", "h:3"], devices_per_worker=2)
  cluster.check_mesh_size(c, "batch:4")  # 2 x 2: fine
  with pytest.raises(cluster.ClusterError, match=r"'batch:2;model:4' has 8 slices.*4 devices"):
    cluster.check_mesh_size(c, "batch:2;model:4")


def listening_socket():
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen()
  return server, f"127.0.0.1:{server.getsockname()[1]}"


def test_wait_for_workers_names_only_the_silent_worker():
  server, alive = listening_socket()
  with server:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    c = described(client="127.0.0.1:1", workers=[alive, dead], connect_timeout_secs=1)
    assert cluster.silent_workers(c) == [1]
    with pytest.raises(cluster.ClusterError) as raised:
      cluster.wait_for_workers(c)
  assert str(raised.value).startswith(f"worker task 1 at {dead}: no server answers")
  assert alive not in str(raised.value)


def test_a_failed_run_names_the_worker_from_tensorflows_message_when_all_answer(tmp_path):
  import tensorflow.compat.v1 as tf

  (first, first_address), (second, second_address) = listening_socket(), listening_socket()
  with first, second:
    c = described(client="127.0.0.1:1", workers=[first_address, second_address])
    error = tf.errors.DeadlineExceededError(
        None, None, "Timed out waiting for /job:worker/replica:0/task:1/device:CPU:0")
    explained = cluster.explain_failure(c, error, str(tmp_path))
  assert str(explained).startswith(f"worker task 1 at {c.workers[1]}: failed during the run")
  assert "No checkpoint was saved yet" in str(explained)


def test_run_config_settings_reach_mesh_tfs_run_config():
  class FakeTpuConfigModule:
    TPUConfig = object

    @staticmethod
    def RunConfig(**kwargs):  # noqa: N802
      return kwargs

  class FakeUtils:
    tpu_config = FakeTpuConfigModule

  with run_config.overridden(FakeUtils, {"save_summary_steps": 1}):
    assert FakeUtils.tpu_config.RunConfig(model_dir="m") == {"model_dir": "m",
                                                             "save_summary_steps": 1}
    assert FakeUtils.tpu_config.TPUConfig is object
  assert FakeUtils.tpu_config is FakeTpuConfigModule
  with pytest.raises(PreflightError, match="save_summary_steps = 0"):
    run_config.bound_settings(save_summary_steps=0)


def test_cpu_devices_gives_a_one_process_run_distinct_virtual_devices():
  settings = run_config.bound_settings(cpu_devices=4)
  config = settings.pop("session_config")
  assert settings == {}
  assert dict(config.device_count) == {"CPU": 4}
  assert config.allow_soft_placement  # as the Estimator's default session config
  assert "device_count" not in str(run_config.bound_settings(save_summary_steps=1))
  with pytest.raises(PreflightError, match="cpu_devices = 0 must be a positive integer"):
    run_config.bound_settings(cpu_devices=0)


def test_cpu_devices_with_a_cluster_is_refused_before_anything_starts():
  class FakeUtils:
    @staticmethod
    def run(**kwargs):
      raise AssertionError("the run started")

  class FakeMain:
    utils = FakeUtils

  cluster.install(FakeMain)
  gin.clear_config()
  try:
    gin.bind_parameter("switch_cluster.client", "127.0.0.1:1")
    gin.bind_parameter("switch_cluster.workers", ["127.0.0.1:2"])
    gin.bind_parameter("switch_run_config.cpu_devices", 4)
    with pytest.raises(cluster.ClusterError, match=r"cpu_devices = 4 sets a one-process run"):
      FakeMain.utils.run(model_dir="m")
  finally:
    gin.clear_config()


class _Exited(Exception):
  def __init__(self, status):
    super().__init__(status)
    self.status = status


@pytest.fixture
def exits(monkeypatch):
  """os._exit replaced by an exception carrying the status."""
  from switch_cli import main as main_lib

  def fake_exit(status):
    raise _Exited(status)

  monkeypatch.setattr(main_lib.os, "_exit", fake_exit)
  import logging

  monkeypatch.setattr(logging, "shutdown", lambda: None)  # pytest's own handlers stay open
  return main_lib._leave_after_cluster_run


def _raise(error):
  def entry_point():
    raise error
  return entry_point


@pytest.mark.parametrize("started", [False, True])
def test_after_a_cluster_run_the_process_leaves_through_os_exit(exits, monkeypatch, started):
  """A run over a cluster ends through os._exit with the command's status (skipping the
  in-process server's teardown, which can abort a finished run); a one-process run returns
  or raises as before."""
  monkeypatch.setattr(cluster, "_client_server_started", started)
  cases = [(lambda: 0, 0), (_raise(SystemExit(0)), 0), (_raise(SystemExit(3)), 3),
           (_raise(SystemExit("bad flag")), 1), (_raise(RuntimeError("boom")), 1),
           (_raise(cluster.ClusterError("worker 1 at 127.0.0.1:1 failed")), 1)]
  for entry_point, status in cases:
    if started:
      with pytest.raises(_Exited) as left:
        exits(entry_point)
      assert left.value.status == status
    else:
      try:
        returned = exits(entry_point)
      except BaseException as e:  # noqa: BLE001  (re-raised unchanged without a cluster)
        assert not isinstance(e, _Exited)
      else:
        assert returned == status


def test_a_cluster_error_after_the_server_started_prints_the_message(exits, monkeypatch,
                                                                     capsys):
  monkeypatch.setattr(cluster, "_client_server_started", True)
  with pytest.raises(_Exited):
    exits(_raise(cluster.ClusterError("worker 1 at 127.0.0.1:1 failed")))
  assert "switch_mesh_transformer: error: worker 1 at 127.0.0.1:1 failed" in capsys.readouterr().err
