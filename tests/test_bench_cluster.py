"""tools/bench_cluster.py's byte arithmetic and graph reading (the benchmark itself is not run).

The hand numbers: Mesh-TF's ring all-to-all over n devices cuts each device's slice into n
pieces; (n - 1) // 2 go forward one link per hop, the rest backward. For n = 4 a source sends
its pieces 1 (forward), 1 and 2 (backward) links away: 4 link crossings per source, 16 in
all, of 1/16 of the tensor each, so every byte crosses a device boundary once. Over 2 tasks
(devices 0, 1 | 2, 3) the links 1-2 and 3-0 cross tasks: 8 of the 16 crossings.
"""

import json
import os
import subprocess
import sys

import pytest

from switch_experiments import bench_cluster as bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("tasks, crossings", [
    ([0, 0, 1, 1], (16, 8)), ([0, 1, 2, 3], (16, 16)), ([0, 0, 0, 0], (16, 0)),
    ([0, 1], (2, 2)),         # each device sends its other half, once
    ([0, 1, 2], (6, 6)),      # one piece each way, one hop: the direct all-to-all
    ([0] * 8, (128, 0)),      # 1+2+3 forward, 1+2+3+4 backward per source: twice the tensor
])
def test_ring_link_crossings(tasks, crossings):
  assert bench.ring_link_crossings(tasks) == crossings


def test_expected_bytes_of_switch_tiny():
  """8 sequences of 32 input / 8 target tokens on batch:4, 8 experts, factor 1.25, d 128."""
  encoder = bench.switch_layer_shape(8 * 32, 8, 128, 1024, 1.25, 4)
  decoder = bench.switch_layer_shape(8 * 8, 8, 128, 1024, 1.25, 4)
  # 4 groups of 64 tokens: ceil(64 / 8 x 1.25) = 10 slots; of 16: ceil(2.5) = 3, minimum 4.
  assert encoder == bench.SwitchLayerShape(experts=8, groups=4, capacity=10, d_model=128)
  assert decoder == bench.SwitchLayerShape(experts=8, groups=4, capacity=4, d_model=128)
  assert encoder.all_to_all_bytes() == 8 * 4 * 10 * 128 * 4 == 163840
  logical = bench.all_to_all_bytes_per_step([encoder, decoder])
  assert logical == 4 * (163840 + 65536) == 917504
  assert bench.expected_crossing_bytes(logical, bench.ring_tasks(2, 4)) == (917504, 458752)
  assert bench.expected_crossing_bytes(logical, bench.ring_tasks(4, 4)) == (917504, 917504)
  assert bench.expected_crossing_bytes(logical, bench.ring_tasks(1, 4)) == (917504, 0)
  # With packed experts each layer also re-splits its [8, 4] float32 filled-slot counts: 256
  # bytes for the two, half of which cross between 2 workers.
  counts = encoder.filled_slot_count_bytes() + decoder.filled_slot_count_bytes()
  assert counts == 2 * 8 * 4 * 4 == 256
  assert bench.expected_crossing_bytes(logical + counts, bench.ring_tasks(2, 4)) == (
      917760, 458880)


def _send(graph_def, producer, key, source, destination):
  node = graph_def.node.add(name=f"send_{key}", op="_Send", input=[producer])
  node.attr["tensor_name"].s = key.encode()
  node.attr["send_device"].s = source.encode()
  node.attr["recv_device"].s = destination.encode()


def test_transfers_read_from_partition_graphs():
  """One transfer per _Send key (both partitions may list it), none within a device; sizes
  from the graph; the ring's split/concat are the all-to-all, its result concat is not."""
  from tensorflow.core.framework import graph_pb2

  w0, w1, client = ("/job:worker/replica:0/task:0/device:CPU:0",
                    "/job:worker/replica:0/task:1/device:CPU:0",
                    "/job:client/replica:0/task:0/device:CPU:0")
  first, second = graph_pb2.GraphDef(), graph_pb2.GraphDef()
  _send(first, "l/reshape/split_2:1", "edge_1_l/reshape/split_2", w0, w1)         # 100 B
  _send(second, "l/reshape/split_2:1", "edge_1_l/reshape/split_2", w0, w1)        # same one
  _send(first, "l/reshape_1/gradients/reshape/concat", "edge_2_c", w1, w0)        # 30 B
  _send(first, "l/reshape/parallel_0/concat", "edge_3_r", w0, client)             # 7 B, other
  _send(first, "inputs/IteratorGetNext:2", "edge_4_i", client, w1)                # 5 B, other
  _send(first, "l/reshape/split", "edge_5_local", w0, w0)                         # no transfer
  sizes = {"l/reshape/split_2:1": 100, "l/reshape_1/gradients/reshape/concat:0": 30,
           "l/reshape/parallel_0/concat:0": 7, "inputs/IteratorGetNext:2": 5}
  transfers = bench.transfers_in([first, second], sizes.get)
  assert [t.num_bytes for t in transfers] == [100, 30, 7, 5]
  assert [t.all_to_all for t in transfers] == [True, True, False, False]
  assert bench.summarize_transfers(transfers) == {"unsized_tensors": 0,
      "all_to_all_bytes_across_devices": 130, "all_to_all_bytes_across_tasks": 130,
      "all_to_all_tensors_across_tasks": 2, "other_bytes_across_devices": 12,
      "other_bytes_across_tasks": 12, "other_tensors_across_tasks": 2}
  assert bench.task_of(w0) != bench.task_of(w1) != bench.task_of(client)
  assert bench.task_of("/job:localhost/replica:0/task:0/device:CPU:3") == bench.task_of(
      "/job:localhost/replica:0/task:0/device:CPU:0")
  # An optimizer-made tensor is left unsized; an all-to-all tensor must be sized.
  unsized = bench.transfers_in([first], lambda name: None if "Iterator" in name else 1)
  assert bench.summarize_transfers(unsized)["unsized_tensors"] == 1
  with pytest.raises(ValueError, match="cannot size l/reshape/split_2:1"):
    bench.transfers_in([first], {}.get)


# A Switch-layer-like round trip on a batch:4 placement mesh: [experts 8, groups 4, 2, 4]
# float32 (1024 B) re-split groups -> experts and back, and the gradient: 4 all-to-alls of
# 1024 B. Run in its own process: TensorFlow servers cannot be stopped inside one.
MICRO_ALL_TO_ALL_BYTES = 4 * 8 * 4 * 2 * 4 * 4


def micro_step_bytes(workers: int) -> dict:
  """One step of the round trip over ``workers`` in-process servers (0: one process with 4
  virtual devices); the summarised transfers of its partition graphs."""
  from mtf_switch import compat  # noqa: F401

  # isort: split
  import mesh_tensorflow as mtf
  import tensorflow.compat.v1 as tf

  from switch_cli.local_cluster import free_ports

  tf.disable_eager_execution()
  with tf.Graph().as_default():
    return _micro_step_bytes(workers, mtf, tf, free_ports)


def _micro_step_bytes(workers, mtf, tf, free_ports) -> dict:
  graph = mtf.Graph()
  mesh = mtf.Mesh(graph, "mesh")
  dims = [mtf.Dimension(name, size) for name, size in (
      ("experts_unsplit", 8), ("groups", 4), ("capacity", 2), ("d_model", 4))]
  moved = [mtf.Dimension("experts", 8), mtf.Dimension("groups_unsplit", 4)] + dims[2:]
  slots = mtf.get_variable(mesh, "slots", dims)
  with tf.variable_scope("switch"):
    expert_major = mtf.reshape(slots, moved)
    back = mtf.reshape(expert_major * 2.0, dims)
  loss = mtf.reduce_sum(back * back)  # not linear: no gradient is a constant grappler folds
  [grad] = mtf.gradients([loss], [slots])
  update = mtf.assign_sub(slots, grad * 0.1)
  if workers:
    ports = free_ports(workers + 1)
    spec = tf.train.ClusterSpec({"client": [f"127.0.0.1:{ports[0]}"],
                                 "worker": [f"127.0.0.1:{p}" for p in ports[1:]]})
    config = tf.ConfigProto(device_count={"CPU": 4 // workers})
    for task in range(workers):
      tf.distribute.Server(spec, job_name="worker", task_index=task, config=config)
    target = tf.distribute.Server(spec, job_name="client", task_index=0).target
    devices = [f"/job:worker/task:{d // (4 // workers)}/device:CPU:{d % (4 // workers)}"
               for d in range(4)]
    session = tf.Session(target)
  else:
    devices = [f"/cpu:{d}" for d in range(4)]
    session = tf.Session(config=tf.ConfigProto(device_count={"CPU": 4}))
  mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(
      mtf.Shape([mtf.Dimension("batch", 4)]),
      mtf.convert_to_layout_rules("groups:batch;experts:batch"), devices)
  lowering = mtf.Lowering(graph, {mesh: mesh_impl})
  step = [lowering.lowered_operation(update), lowering.export_to_tf_tensor(loss)]
  with session:
    session.run(tf.global_variables_initializer())
    session.run(lowering.copy_masters_to_slices())
    metadata = tf.RunMetadata()
    session.run(step, options=tf.RunOptions(output_partition_graphs=True),
                run_metadata=metadata)
  transfers = bench.transfers_in(metadata.partition_graphs,
                                 bench.static_tensor_bytes(tf.get_default_graph()))
  return bench.summarize_transfers(transfers)


MICRO_WORKERS = (0, 2, 4)


@pytest.fixture(scope="module")
def micro_measured():
  """{workers: summary} of the micro step at each worker count, from one child process."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


@pytest.mark.parametrize("workers", MICRO_WORKERS)
def test_measured_all_to_all_bytes_equal_the_ring_computation(micro_measured, workers):
  """A real step's partition graphs: the all-to-all bytes across devices and across tasks
  are exactly the hand computation's (0 workers: one process, nothing crosses a task)."""
  measured = micro_measured[workers]
  tasks = bench.ring_tasks(workers or 1, 4)
  across_devices, across_tasks = bench.expected_crossing_bytes(MICRO_ALL_TO_ALL_BYTES, tasks)
  assert (across_devices, across_tasks) == (4096, {0: 0, 2: 2048, 4: 4096}[workers])
  assert measured["all_to_all_bytes_across_devices"] == across_devices
  assert measured["all_to_all_bytes_across_tasks"] == across_tasks


if __name__ == "__main__":
  print(json.dumps({workers: micro_step_bytes(workers) for workers in MICRO_WORKERS}))


@pytest.mark.slow
def test_the_benchmark_reports_a_run_over_two_workers(tmp_path, capsys):
  """The whole command at one cluster setting: the client's record reaches the table. (A
  cluster run ends its process itself once it is over; the benchmark's child must print its
  record first: without that, every cluster row was "error: exit 0".)"""
  status = bench.main(["--workers", "2", "--warmup_steps", "1", "--timed_steps", "2",
                       "--task", "switch_default_corpus_span_corruption",
                       "--log_dir", str(tmp_path), "--setting_timeout_secs", "600"])
  out = capsys.readouterr().out
  summary = json.loads(out.strip().splitlines()[-1])
  (setting,) = summary["settings"]
  assert "error" not in setting, setting.get("error")
  assert status == 0
  assert setting["timed_steps"] == 2 and setting["steps_per_second"] > 0
  # 2 workers x 2 devices: half of the all-to-all's ring crosses between the processes
  # (the filled-slot counts' too where switch_tiny's experts are packed: the child's oneDNN
  # decides, see mtf_switch.cpu_gemm).
  assert setting["all_to_all_bytes_across_tasks"] == setting[
      "expected_all_to_all_bytes_across_tasks"] > 0
