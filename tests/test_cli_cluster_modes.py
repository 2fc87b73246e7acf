"""``eval``, ``perplexity_eval`` and ``infer`` over worker processes (switch_cli.cluster) give
what one process gives from the same checkpoint.

switch_tiny is trained over 2 worker processes x 2 devices (experts over batch,
gin/mesh/cluster_expert_data.gin; tests/e2e/cluster_runs.py starts the runs) on the
SST-2-shaped task, long enough (30 steps) that its decodes depend on the input (after 4 steps
of span corruption every input decoded to the same line and every SST-2 prediction was the
same invalid label: equal files would have shown little). Each mode then reads that
checkpoint twice, over the same workers and in one process on 4 virtual CPU devices (the same
mesh), each in a copy of the model directory. Workers are on 127.0.0.1 ports picked free,
started and killed by the module's fixture; every run's wait is bounded.
"""

import pathlib
import shutil

import numpy as np
import pytest

from switch_cli.local_cluster import LocalCluster
from tests.e2e import cli
from tests.e2e.cluster_runs import MODEL, ONE_PROCESS, run_cli

pytestmark = pytest.mark.slow  # each test runs the command line twice (minutes under load)
STEPS = 30
TASK = 'MIXTURE_NAME = "e2e_sst2"'
TRAIN = [TASK, 'utils.run.mode = "train"', *MODEL, "mesh_train_dataset_fn.seed = 1"]
CHECKPOINT = f"utils.run.eval_checkpoint_step = {STEPS}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return cli.make_workdir(tmp_path_factory.mktemp("cluster_modes"))


@pytest.fixture(scope="module")
def local(tmp_path_factory):
  """2 worker processes x 2 devices for the whole file, killed when it ends."""
  with LocalCluster(workers=2, devices_per_worker=2,
                    log_dir=str(tmp_path_factory.mktemp("workers"))) as running:
    yield running


@pytest.fixture(scope="module")
def trained(workdir, local, tmp_path_factory):
  """A model directory with the checkpoint of STEPS steps trained over the workers."""
  model_dir = tmp_path_factory.mktemp("trained") / "model"
  run_cli(workdir, model_dir, *TRAIN, f"utils.run.train_steps = {STEPS}",
          f"utils.run.save_checkpoints_steps = {STEPS}", *local.gin_params())
  assert cli.checkpoint_steps(model_dir)[-1] == STEPS
  return model_dir


def both_ways(workdir, local, trained, tmp_path, *gin_params, **options):
  """The run over the workers and in one process, each in a copy of ``trained``; the two
  model directories (cluster, one process) and the cluster run's log."""
  on_cluster, one_process = tmp_path / "cluster", tmp_path / "one_process"
  shutil.copytree(trained, on_cluster)
  shutil.copytree(trained, one_process)
  log = run_cli(workdir, on_cluster, *gin_params, *local.gin_params(), **options)
  run_cli(workdir, one_process, *gin_params, *ONE_PROCESS, **options)
  return on_cluster, one_process, log


def test_perplexity_eval_over_two_workers_equals_one_process(workdir, local, trained,
                                                             tmp_path):
  """Estimator.evaluate (mode perplexity_eval) over the workers: the same loss and
  neg log perplexity as in one process."""
  on_cluster, one_process, log = both_ways(
      workdir, local, trained, tmp_path, TASK, *MODEL, 'utils.run.mode = "perplexity_eval"',
      'utils.run.dataset_split = "validation"',
      CHECKPOINT, "utils.run.perplexity_eval_steps = 2")
  assert "'/job:worker/task:1/device:CPU:1'" in log  # the mesh was the cluster's
  cluster_dirs = cli.run_results.eval_dirs(str(on_cluster))
  reference_dirs = cli.run_results.eval_dirs(str(one_process))
  assert [pathlib.Path(d).name for d in cluster_dirs] == [
      pathlib.Path(d).name for d in reference_dirs] and len(cluster_dirs) == 1
  cluster_metrics = cli.run_results.read_scalars(cluster_dirs[0])
  reference = cli.run_results.read_scalars(reference_dirs[0])
  for tag in ("loss", "neg_log_perplexity"):
    assert list(cluster_metrics[tag]) == list(reference[tag]) == [STEPS], (tag, reference)
    np.testing.assert_allclose(cluster_metrics[tag][STEPS], reference[tag][STEPS], rtol=1e-4)
  assert 0 < reference["loss"][STEPS] < 20


def test_decoding_eval_over_two_workers_equals_one_process(workdir, local, trained, tmp_path):
  """mode eval (decode the validation split, then t5's metric) over the workers: the same
  predictions, line for line, and the same accuracy as in one process."""
  on_cluster, one_process, _ = both_ways(
      workdir, local, trained, tmp_path, TASK, *MODEL, 'utils.run.dataset_split = "validation"',
      CHECKPOINT,
      gin_files=["recipes/finetune_eval.gin"])
  name = f"validation_eval/e2e_sst2_{STEPS}_predictions"
  predictions = (on_cluster / name).read_text().splitlines()
  assert predictions == (one_process / name).read_text().splitlines()
  assert len(predictions) == 16  # the 16 validation rows
  assert sorted(set(predictions)) == ["0", "1"]  # both labels: the decodes depend on the input
  accuracy = cli.run_results.decode_metrics(str(on_cluster), "e2e_sst2")
  assert list(accuracy) == [STEPS]
  assert accuracy == cli.run_results.decode_metrics(str(one_process), "e2e_sst2")


def test_infer_over_two_workers_writes_what_one_process_writes(workdir, local, trained,
                                                               tmp_path):
  """mode infer (decode a text file) over the workers: the same lines as in one process."""
  # The task's input format, its 4 validation sentences and 7 it never saw.
  sentences = ["a joy to watch", "dull and lifeless", "warm , funny and wise", "a tedious mess",
               "a joy", "a tedious joy", "dull", "warm and funny", "lifeless mess",
               "funny and wise to watch", "a dull , tedious mess"]
  inputs = [f"sst2 sentence: {s}" for s in sentences]
  source = tmp_path / "inputs.txt"
  source.write_text("\n".join(inputs) + "\n", encoding="utf-8")
  infer = [TASK, *MODEL, 'utils.run.mode = "infer"',
           CHECKPOINT, f'decode_from_file.input_filename = "{source}"']
  decoded = {}
  for name, placement in (("cluster", local.gin_params()), ("one_process", ONE_PROCESS)):
    model_dir = tmp_path / name
    shutil.copytree(trained, model_dir)
    run_cli(workdir, model_dir, *infer, *placement,
            f'decode_from_file.output_filename = "{tmp_path / name}_decoded"')
    decoded[name] = (tmp_path / f"{name}_decoded-{STEPS}").read_text(
        encoding="utf-8").splitlines()
  assert len(decoded["cluster"]) == len(inputs)  # one line per input, the padding dropped
  assert decoded["cluster"] == decoded["one_process"]
  assert decoded["cluster"][:4] == ["positive", "negative", "positive", "negative"]
