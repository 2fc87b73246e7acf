"""The cluster test files' common ground: switch_tiny's deterministic settings, the command
line started over a cluster or in one process, and what a run left behind.

Runs are ``python -m switch_cli`` on gin/models/switch_tiny.gin at short sequences with
gin/mesh/cluster_expert_data.gin's mesh (batch:4, experts over batch): over 2 worker processes
x 2 devices when a LocalCluster's ``gin_params()`` are added, else in one process on 4 virtual
CPU devices (``ONE_PROCESS``). Every wait is bounded: a run past its limit is killed.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

from tests.e2e import cli

REPO = cli.REPO
# Deterministic on both sides: one init seed, the argmax router (no jitter noise: Mesh-TF's
# placement-mesh random ops are not repeatable across processes), no dropout (t5_tiny.gin).
MODEL = ['utils.run.sequence_length = {"inputs": 32, "targets": 8}',
         'utils.run.batch_size = ("sequences_per_batch", 8)', "mtf_switch.init_seed.seed = 3",
         'mtf_switch.SwitchFFN.router_policy_train = "argmax"']
# Training on the corpus in one data order, the loss summarised at every step.
RUN = ['MIXTURE_NAME = "e2e_text_span_corruption"', 'utils.run.mode = "train"', *MODEL,
       "mesh_train_dataset_fn.seed = 1", "switch_run_config.save_summary_steps = 1",
       "switch_run_config.log_step_count_steps = 1"]
# The same mesh in one process: 4 virtual CPU devices, one per slice (without cpu_devices the
# Estimator's session has one CPU device and soft placement runs all four "cpu:k" on cpu:0).
ONE_PROCESS = ['utils.run.mesh_devices = ["cpu:0", "cpu:1", "cpu:2", "cpu:3"]',
               "switch_run_config.cpu_devices = 4"]
# A limit against a hung run, not a speed check (20 steps took 3.5 min under load 7).
RUN_TIMEOUT = 1200


def start_cli(workdir, model_dir, *gin_params, gin_files=(), module_imports=(), env=None):
  """Starts switch_mesh_transformer on switch_tiny over the cluster mesh; (process, log path).

  ``module_imports`` are added to tests.e2e.e2e_tasks; ``env`` to the environment."""
  env = dict(os.environ, E2E_DIR=str(workdir), PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             MTF_SWITCH_CACHE_DIR=str(pathlib.Path(workdir) / "cache"), **(env or {}))
  args = [sys.executable, "-m", "switch_cli", f"--model_dir={model_dir}",
          "--module_import=tests.e2e.e2e_tasks", "--gin_file=models/switch_tiny.gin",
          "--gin_file=mesh/cluster_expert_data.gin"]
  args += [f"--module_import={m}" for m in module_imports]
  args += [f"--gin_file={g}" for g in gin_files]
  args += [f"--gin_param={p}" for p in gin_params]
  log_path = f"{model_dir}.log"
  with open(log_path, "a") as log:
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
  return process, log_path


def finish(process, log_path, timeout=RUN_TIMEOUT):
  """Waits (bounded) for the run; (exit status, its log). A run past the limit is killed."""
  try:
    process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    raise
  return process.returncode, pathlib.Path(log_path).read_text(errors="replace")


def run_cli(workdir, model_dir, *gin_params, timeout=RUN_TIMEOUT, **options):
  """A run that must succeed; its log. ``options`` as start_cli's."""
  status, log = finish(*start_cli(workdir, model_dir, *gin_params, **options), timeout=timeout)
  assert status == 0, log[-4000:]
  return log


def losses(model_dir):
  return cli.run_results.read_scalars(str(model_dir))["loss"]


def probed_run(workdir, model_dir, *gin_params, **options):
  """A training run with tests.e2e.placement_probe: (its log, the devices its first step's
  partition graphs ran on)."""
  devices_file = pathlib.Path(f"{model_dir}.devices.json")
  options["module_imports"] = [*options.get("module_imports", ()), "tests.e2e.placement_probe"]
  options["env"] = dict(options.get("env") or {}, PLACEMENT_PROBE_OUT=str(devices_file))
  log = run_cli(workdir, model_dir, *gin_params, **options)
  return log, json.loads(devices_file.read_text())
