"""The command line end to end: a bfloat16 request trains in bfloat16 on CPU (router float32),
on text files named in gin alone (the ``text_files`` task); then the pre-flight checks refuse,
at once and by name, what would hang, fail late or do nothing.

Few processes, each as short as the check allows: one training run (1 step of the micro Switch
model), one that builds the graph of another model in its directory, two that stop before
TensorFlow builds anything.
"""

import os
import re
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWITCH = ["models/switch_tiny.gin", "mesh/cpu_data_parallel.gin", "repro/micro.gin"]
DENSE = ["models/t5_tiny.gin", "mesh/cpu_data_parallel.gin", "repro/micro.gin"]

pytestmark = pytest.mark.slow


def _cli(root, model_dir, gin_files, *gin_params, expect_ok=True):
  from tests.e2e import cli  # the corpus writer

  corpus = root / "corpus.txt"
  if not corpus.exists():
    cli._write_corpus(corpus)
  args = [sys.executable, "-m", "switch_cli", f"--model_dir={model_dir}"]
  args += [f"--gin_file={g}" for g in gin_files]
  params = ['MIXTURE_NAME = "text_files"', f'text_files.paths = ["{corpus}"]',
            "text_files.vocab_size = 300", *gin_params]
  args += [f"--gin_param={p}" for p in params]
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             MTF_SWITCH_CACHE_DIR=str(root / "cache"))
  result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  log = result.stdout + result.stderr
  assert (result.returncode == 0) == expect_ok, log[-4000:]
  return log


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A Switch model trained 1 step in bfloat16 on the text_files task."""
  root = tmp_path_factory.mktemp("bf16")
  model_dir = root / "switch"
  log = _cli(root, model_dir, SWITCH, 'activation_dtype = "bfloat16"',
             "utils.run.train_steps = 1", "utils.run.save_checkpoints_steps = 1")
  return root, model_dir, log


def _op_dtypes(graph_text, name_pattern, op):
  """The dtypes (attr T) of the graph's ops of type ``op`` whose name matches."""
  nodes = re.findall(r'node \{\n  name: "([^"]+)"\n  op: "([^"]+)"(.*?)\n\}', graph_text, re.S)
  dtypes = set()
  for name, node_op, body in nodes:
    if node_op == op and re.search(name_pattern, name):
      found = re.search(r'key: "T"\n    value \{\n      type: (DT_\w+)', body)
      dtypes.add(found.group(1))
  return dtypes


def test_bfloat16_request_trains_in_bfloat16_with_a_float32_router(trained):
  root, model_dir, _ = trained
  config = (model_dir / "operative_config.gin").read_text()
  assert "get_variable_dtype.activation_dtype = 'bfloat16'" in config
  assert "get_variable_dtype.slice_dtype = 'float32'" in config
  graph = (model_dir / "graph.pbtxt").read_text()
  # Activations: attention's projections and the dense FFN compute in bfloat16 (mesh-tf keeps
  # one of attention's small einsums, over its float32 bias, in float32) ...
  assert _op_dtypes(graph, r"SelfAttention/einsum/parallel", "Einsum") == {"DT_BFLOAT16"}
  experts = set().union(*(_op_dtypes(graph, r"SwitchFFN/(?!router)", op)
                          for op in ("MatMul", "BatchMatMulV2", "Einsum")))
  assert "DT_BFLOAT16" in experts  # the experts' matmuls, whichever dispatch path built them
  assert _op_dtypes(graph, r"DenseReluDense/.*", "Relu") == {"DT_BFLOAT16"}
  # ... while the router's product (and what follows it) stays float32: selective precision.
  assert _op_dtypes(graph, r"SwitchFFN/router/einsum", "Einsum") == {"DT_FLOAT"}
  # The vocabulary of the text files was built on first use and cached.
  assert [n for n in os.listdir(root / "cache") if n.endswith(".model")]


def test_another_model_in_the_directory_fails_before_the_session(trained):
  """t5_tiny started in switch_tiny's directory: named, with the command that trained it."""
  root, model_dir, _ = trained
  log = _cli(root, model_dir, DENSE, "utils.run.train_steps = 4", expect_ok=False)
  assert "holds a checkpoint of a different model (model.ckpt-1)" in log
  assert "DenseReluDense" in log and "SwitchFFN" in log
  assert "created by: t5_mesh_transformer" in log and "models/switch_tiny.gin" in log
  assert "not found in checkpoint" not in log  # TensorFlow's late error never came
  assert "Traceback" not in log


def test_nothing_to_train_is_said_plainly_and_stale_temporary_files_go(trained):
  root, model_dir, _ = trained
  stale = model_dir / "model.ckpt-1.meta.tmp0123456789abcdef"  # as a SIGKILL mid-write leaves
  stale.write_bytes(b"partial")
  os.utime(stale, (time.time() - 60,) * 2)
  log = _cli(root, model_dir, SWITCH, 'activation_dtype = "bfloat16"', "utils.run.train_steps = 1")
  assert "Nothing was trained" in log and "already holds step 1" in log
  assert not stale.exists()
  assert "Removed 1 temporary file(s)" in log


def test_evaluating_an_empty_directory_fails_at_once_naming_it(tmp_path, trained):
  root, _, _ = trained
  empty = tmp_path / "never_trained"
  started = time.time()
  log = _cli(root, empty, SWITCH, 'utils.run.mode = "perplexity_eval"', expect_ok=False)
  assert f'mode = "perplexity_eval" reads a checkpoint, but --model_dir={empty} has none' in log
  assert time.time() - started < 600  # t5 alone waits for a checkpoint forever
