"""The command-line test files' common ground: the work directory, the CLI call, and the one
pre-trained tiny Switch model they share.

``make_workdir`` writes the E2E_DIR that tests/e2e/e2e_tasks.py reads (corpus, SST-2 TSVs, two
languages); ``run_cli`` runs ``python -m switch_cli`` on tests/e2e/tiny_switch_cpu.gin;
``pretrain`` trains, SIGKILLs and resumes that model. ``shared_once`` runs such a build once
per test session, across pytest-xdist workers: tests/conftest.py's ``pretrained`` fixture
hands the one checkpoint to every file that needs it (the end-to-end chain, the distillation
recipe, the HF round trip, the init-seed check).
"""

import fcntl
import inspect
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from switch_experiments import run_results

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIN = os.path.join(REPO, "tests", "e2e", "tiny_switch_cpu.gin")


checkpoint_steps = run_results.checkpoint_steps

# A limit against a hung run, not a speed check: on the 2-core machine shared with other jobs
# (load average 10) one fine-tuning run took 11 minutes.
CLI_TIMEOUT = 1800

TRAIN = ['MIXTURE_NAME = "e2e_text_span_corruption"', 'utils.run.mode = "train"',
         "utils.run.save_checkpoints_steps = 4"]
LANGUAGES = 'MIXTURE_NAME = "e2e_languages"'
# The pre-training's first run, as a fresh run of its own: bound to one initialisation seed,
# so that another fresh run with these bindings must save the same step-0 weights.
INIT_SEED = 5
FRESH_RUN = [*TRAIN, "utils.run.train_steps = 400", f"mtf_switch.init_seed.seed = {INIT_SEED}"]


def _write_corpus(path):
  """Real prose, no download: the docstrings of a few standard-library modules."""
  import argparse
  import collections
  import json as json_module
  import textwrap

  documents = []
  for module in (argparse, collections, json_module, pathlib, textwrap, inspect):
    for _, member in inspect.getmembers(module):
      doc = inspect.getdoc(member) or ""
      for paragraph in doc.split("\n\n"):
        text = " ".join(paragraph.split())
        if len(text) > 40:
          documents.append(text)
  documents = sorted(set(documents))
  assert len(documents) > 300
  pathlib.Path(path).write_text("\n".join(documents) + "\n", encoding="utf-8")


def _write_languages(root):
  """Two "languages" for a mixture: the corpus lines as they are, and upper-cased."""
  lines = (root / "corpus.txt").read_text(encoding="utf-8").splitlines()
  (root / "languages").mkdir()
  (root / "languages" / "plain.txt").write_text("\n".join(lines[::2]) + "\n", encoding="utf-8")
  (root / "languages" / "upper.txt").write_text(
      "\n".join(line.upper() for line in lines[1::2]) + "\n", encoding="utf-8")


def _write_sst2(glue_dir):
  os.makedirs(glue_dir, exist_ok=True)
  rows = [("a joy to watch", 1), ("dull and lifeless", 0), ("warm , funny and wise", 1),
          ("a tedious mess", 0)] * 4
  for name in ("train.tsv", "dev.tsv"):
    with open(os.path.join(glue_dir, name), "w", encoding="utf-8") as f:
      f.write("sentence\tlabel\n")
      f.writelines(f"{s}\t{label}\n" for s, label in rows)


def make_workdir(root):
  """The E2E_DIR that tests/e2e/e2e_tasks.py reads: corpus, SST-2 TSVs, two languages."""
  root = pathlib.Path(root)
  _write_corpus(root / "corpus.txt")
  _write_sst2(root / "glue" / "SST-2")
  _write_languages(root)
  return root


def run_cli(workdir, model_dir, *gin_params, timeout=CLI_TIMEOUT, wait=True, gin_files=()):
  """``python -m switch_cli`` on the e2e model and tasks; returns its log (wait=True) or
  (process, log path). A failed run fails the caller with the log's tail."""
  env = dict(os.environ, E2E_DIR=str(workdir), PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             MTF_SWITCH_CACHE_DIR=str(pathlib.Path(workdir) / "cache"))
  args = [sys.executable, "-m", "switch_cli", f"--model_dir={model_dir}",
          "--module_import=tests.e2e.e2e_tasks", f"--gin_file={GIN}"]
  args += [f"--gin_file={g}" for g in gin_files]
  args += [f"--gin_param={p}" for p in gin_params]
  # A name of its own: test files in two workers run the CLI in one work directory.
  fd, log_path = tempfile.mkstemp(prefix="log_", suffix=".txt", dir=workdir)
  with os.fdopen(fd, "w") as log:
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
  if not wait:
    return proc, log_path
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # no orphan run left holding the CPU
    proc.wait()
    raise
  text = open(log_path, encoding="utf-8", errors="replace").read()
  assert proc.returncode == 0, text[-4000:]
  return text


def run_until_checkpoint(workdir, model_dir, step, *gin_params, deadline_seconds=900):
  """Starts a training run and SIGKILLs it once a checkpoint at ``step`` or later is saved;
  returns the checkpoint steps then on disk."""
  proc, _ = run_cli(workdir, model_dir, *gin_params, wait=False)
  # A limit, not a speed check: a loaded machine took over 400 s to a first checkpoint.
  deadline = time.time() + deadline_seconds
  try:
    while time.time() < deadline and not [s for s in checkpoint_steps(model_dir) if s >= step]:
      assert proc.poll() is None, "training ended before it could be killed"
      time.sleep(0.5)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  saved = checkpoint_steps(model_dir)
  assert saved and saved[-1] >= step, (
      f"no checkpoint at step {step} or later in {deadline_seconds} s: {saved}")
  return saved


def pretrain(workdir):
  """Kill training at a checkpoint boundary with SIGKILL, then rerun it (on the language
  mixture: the data is not in the checkpoint, the weights and the global step are).

  Returns {"workdir", "model_dir", "before": checkpoint steps after the kill, "after": after
  the rerun, "resume_log"}, paths as strings.
  """
  workdir = pathlib.Path(workdir)
  model_dir = workdir / "model"
  before = run_until_checkpoint(workdir, model_dir, 4, *FRESH_RUN)
  resume_log = run_cli(workdir, model_dir, *TRAIN, LANGUAGES,
                       f"utils.run.train_steps = {before[-1] + 4}")
  return {"workdir": str(workdir), "model_dir": str(model_dir), "before": before,
          "after": checkpoint_steps(model_dir), "resume_log": resume_log}


class SharedBuildError(RuntimeError):
  """A build that ``shared_once`` ran failed (here or in another worker)."""


def shared_once(tmp_path_factory, name, build):
  """``build(directory)`` once per test session, whichever worker asks first; its result.

  Under pytest-xdist the workers' temporary directories share one parent, the session's
  (pytest-xdist's documented way to share session data): the first worker builds there
  under a file lock, the others wait for the lock and read the result (JSON). A failed build
  is recorded too, and every caller fails with its message. Without xdist (``-n 0``) the
  session fixture that calls this caches the result itself.
  """
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    return build(tmp_path_factory.mktemp(name))
  shared = tmp_path_factory.getbasetemp().parent
  result_path = shared / f"{name}.json"
  with open(shared / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not result_path.exists():
      directory = shared / name
      directory.mkdir()
      try:
        result = {"ok": build(directory)}
      except Exception:
        result_path.write_text(json.dumps({"error": traceback.format_exc()}))
        raise
      result_path.write_text(json.dumps(result))
  result = json.loads(result_path.read_text())
  if "error" in result:
    raise SharedBuildError(f"the shared build {name!r} failed:\n{result['error']}")
  return result["ok"]
