"""``switch_mesh_transformer`` over worker processes (switch_cli.cluster), end to end.

Workers are ``python -m switch_cli.worker`` processes on 127.0.0.1 ports picked free
(switch_cli.local_cluster), started and killed here; every wait is bounded. The model is
gin/models/switch_tiny.gin at short sequences, its experts laid over the workers
(gin/mesh/cluster_expert_data.gin: batch:4 = 2 workers x 2 devices, experts over batch);
tests/e2e/cluster_runs.py starts the runs. eval and infer: tests/test_cli_cluster_modes.py.
"""

import pathlib
import re
import shutil
import time

import numpy as np
import pytest

from switch_cli.local_cluster import LocalCluster, free_ports
from tests.e2e import cli
from tests.e2e.cluster_runs import (ONE_PROCESS, RUN, RUN_TIMEOUT, finish, losses, probed_run,
                                    run_cli, start_cli)

# Every test starts the command line (several minutes each under load): the slow tier.
pytestmark = pytest.mark.slow
STEPS = 20
VIRTUAL_CPUS = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(4)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return cli.make_workdir(tmp_path_factory.mktemp("cluster"))


def test_training_over_two_workers_equals_one_process(workdir, tmp_path):
  """20 steps with the experts over 2 worker processes: the loss at every step equals the
  same run's in one process on the same mesh of virtual devices; the client wrote the
  checkpoint, and a one-process run resumes from it."""
  on_cluster, one_process = tmp_path / "cluster", tmp_path / "one_process"
  with LocalCluster(workers=2, devices_per_worker=2, log_dir=str(tmp_path)) as local:
    log, cluster_devices = probed_run(workdir, on_cluster, *RUN,
                                      f"utils.run.train_steps = {STEPS}", *local.gin_params())
  # The mesh's slices ran in the workers: the placement was the cluster's.
  assert "'/job:worker/task:1/device:CPU:1'" in log
  worker_devices = {d for d in cluster_devices if "/job:worker/" in d}
  assert worker_devices == {f"/job:worker/replica:0/task:{t}/device:CPU:{d}"
                            for t in range(2) for d in range(2)}, cluster_devices
  _, reference_devices = probed_run(workdir, one_process, *RUN,
                                    f"utils.run.train_steps = {STEPS}", *ONE_PROCESS)
  # The reference's slices ran on 4 distinct devices, not soft-placed onto one.
  assert reference_devices == VIRTUAL_CPUS, reference_devices

  cluster_losses, reference = losses(on_cluster), losses(one_process)
  steps = list(range(1, STEPS + 1))
  assert sorted(cluster_losses) == sorted(reference) == steps
  np.testing.assert_allclose([cluster_losses[s] for s in steps], [reference[s] for s in steps],
                             rtol=2e-3)
  assert reference[1] - reference[STEPS] > 1.0  # it trained: the curve is not flat

  # The checkpoint, written by the client, loads in a one-process run that trains on from it.
  resumed = tmp_path / "resumed"
  shutil.copytree(on_cluster, resumed)
  log = run_cli(workdir, resumed, *RUN, f"utils.run.train_steps = {STEPS + 2}", *ONE_PROCESS)
  assert re.search(rf"Restoring parameters from \S*model\.ckpt-{STEPS}\b", log), log[-3000:]
  assert cli.checkpoint_steps(resumed)[-1] == STEPS + 2


def test_worker_down_at_start_is_named_before_any_graph(workdir, tmp_path):
  """No worker listens at one address: the run stops at once, naming it; nothing is built."""
  with LocalCluster(workers=1, devices_per_worker=2, log_dir=str(tmp_path)) as local:
    absent = f"127.0.0.1:{free_ports(1)[0]}"
    workers = ", ".join(f'"{w}"' for w in [local.workers[0], absent])
    model_dir = tmp_path / "model"
    started = time.monotonic()
    status, log = finish(*start_cli(
        workdir, model_dir, *RUN, "utils.run.train_steps = 2",
        f'switch_cluster.client = "{local.client}"', f"switch_cluster.workers = [{workers}]",
        "switch_cluster.connect_timeout_secs = 3"), timeout=600)
  assert status == 1, log[-3000:]
  assert f"worker task 1 at {absent}: no server answers" in log, log[-3000:]
  assert local.workers[0] + ":" not in log.split("error:")[-1]  # the live worker is not blamed
  assert not (model_dir / "graph.pbtxt").exists()  # no graph was built
  assert time.monotonic() - started < 600


def test_worker_killed_mid_training_stops_the_run_and_a_rerun_resumes(workdir, tmp_path):
  """Worker 1 killed after the step-10 checkpoint: the client stops with an error naming it
  (no hang, no silent recovery); once it is back, the same command resumes from the last
  checkpoint and trains to the end, every earlier checkpoint kept."""
  model_dir = tmp_path / "model"
  command = [*RUN, "utils.run.train_steps = 30", "utils.run.save_checkpoints_steps = 5"]
  with LocalCluster(workers=2, devices_per_worker=2, log_dir=str(tmp_path)) as local:
    process, log_path = start_cli(workdir, model_dir, *command, *local.gin_params())
    deadline = time.monotonic() + RUN_TIMEOUT
    while not [s for s in cli.checkpoint_steps(model_dir) if s >= 10]:
      assert process.poll() is None, pathlib.Path(log_path).read_text()[-3000:]
      assert time.monotonic() < deadline, "no step-10 checkpoint in time"
      time.sleep(0.5)
    local.stop(1)
    status, log = finish(process, log_path, timeout=600)
    assert status == 1, log[-3000:]
    error = log.split("switch_mesh_transformer: error:")[-1]
    assert f"worker task 1 at {local.workers[1]}: no longer answers" in error, log[-3000:]
    before = cli.checkpoint_steps(model_dir)
    assert before[-1] >= 10 and before[-1] < 30
    assert f"model.ckpt-{before[-1]}" in error  # where a rerun resumes

    local.start(1)
    log = run_cli(workdir, model_dir, *command, *local.gin_params())
  assert re.search(rf"Restoring parameters from \S*model\.ckpt-{before[-1]}\b", log), log[-3000:]
  after = cli.checkpoint_steps(model_dir)
  assert after[-1] == 30
  assert before[-1] in after  # the checkpoint resumed from is kept


def test_worker_killed_after_the_checks_before_the_session_is_named_in_bounded_time(
    workdir, tmp_path):
  """Worker 1 killed right after the client's start-up checks pass (tests/e2e/
  kill_after_probe.py), while the graph is built: the session's creation, where TensorFlow's
  master waits for every worker without limit, gives up after connect_timeout_secs and the run
  stops with an error naming the worker."""
  model_dir = tmp_path / "model"
  with LocalCluster(workers=2, devices_per_worker=2, log_dir=str(tmp_path)) as local:
    process, log_path = start_cli(
        workdir, model_dir, *RUN, "utils.run.train_steps = 2", *local.gin_params(),
        "switch_cluster.connect_timeout_secs = 5", module_imports=["tests.e2e.kill_after_probe"],
        env={"KILL_AFTER_PROBE_PGID": str(local.processes[1].pid)})
    # Bounded: graph building (about a minute under load), 5 s, the 10 s bounded close.
    status, log = finish(process, log_path, timeout=600)
  assert "kill_after_probe: the checks passed" in log, log[-3000:]
  assert status == 1, log[-3000:]
  error = log.split("switch_mesh_transformer: error:")[-1]
  assert f"worker task 1 at {local.workers[1]}: no longer answers" in error, log[-3000:]
  assert "did not answer in 5 s (switch_cluster.connect_timeout_secs)" in error, log[-3000:]
  assert local.workers[0] not in error  # the live worker is not blamed
  assert not cli.checkpoint_steps(model_dir)  # no step ran
