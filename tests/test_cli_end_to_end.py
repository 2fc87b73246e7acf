"""The t5_mesh_transformer command line, end to end, with a tiny Switch model on CPU.

One module-scoped run directory: train, SIGKILL mid-training, rerun (the global step continues
from the last checkpoint), evaluate perplexity, and fine-tune the checkpoint on a GLUE-shaped
(SST-2 TSV) task and evaluate its accuracy.
"""

import inspect
import os
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(REPO, "tests", "e2e", "tiny_switch_cpu.gin")


def _write_corpus(path):
  """Real prose, no download: the docstrings of a few standard-library modules."""
  import argparse
  import collections
  import json as json_module
  import pathlib
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


def _write_sst2(glue_dir):
  os.makedirs(glue_dir, exist_ok=True)
  rows = [("a joy to watch", 1), ("dull and lifeless", 0), ("warm , funny and wise", 1),
          ("a tedious mess", 0)] * 4
  for name in ("train.tsv", "dev.tsv"):
    with open(os.path.join(glue_dir, name), "w", encoding="utf-8") as f:
      f.write("sentence\tlabel\n")
      f.writelines(f"{s}\t{label}\n" for s, label in rows)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp("e2e")
  _write_corpus(root / "corpus.txt")
  _write_sst2(root / "glue" / "SST-2")
  return root


def _cli(workdir, model_dir, *gin_params, timeout=600, wait=True):
  env = dict(os.environ, E2E_DIR=str(workdir), PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             MTF_SWITCH_CACHE_DIR=str(workdir / "cache"))
  args = [sys.executable, "-m", "mtf_switch.cli", f"--model_dir={model_dir}",
          "--module_import=tests.e2e.e2e_tasks", f"--gin_file={GIN}"]
  args += [f"--gin_param={p}" for p in gin_params]
  log = open(os.path.join(workdir, f"log_{len(os.listdir(workdir))}.txt"), "w")
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
  if not wait:
    return proc, log.name
  proc.wait(timeout=timeout)
  text = open(log.name, encoding="utf-8", errors="replace").read()
  assert proc.returncode == 0, text[-4000:]
  return text


def _checkpoint_steps(model_dir):
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(m.group(1)) for f in os.listdir(model_dir)
                if (m := re.fullmatch(r"model\.ckpt-(\d+)\.index", f)))


def _scalars(model_dir, tag):
  """Values of a TensorBoard scalar written under model_dir."""
  import tensorflow.compat.v1 as tf

  values = []
  for name in os.listdir(model_dir):
    if name.startswith("events.out.tfevents"):
      for event in tf.train.summary_iterator(os.path.join(model_dir, name)):
        values += [v.simple_value for v in event.summary.value if v.tag == tag]
  return values


TRAIN = ['MIXTURE_NAME = "e2e_text_span_corruption"', 'utils.run.mode = "train"',
         "utils.run.save_checkpoints_steps = 4"]


def test_train_sigkill_resume_and_evaluate(workdir):
  """Kill training at a checkpoint boundary with SIGKILL, rerun: the global step continues
  from the last checkpoint and no earlier checkpoint is lost; then evaluate perplexity."""
  model_dir = workdir / "model"
  proc, _ = _cli(workdir, model_dir, *TRAIN, "utils.run.train_steps = 400", wait=False)
  deadline = time.time() + 400
  try:
    while time.time() < deadline and not [s for s in _checkpoint_steps(model_dir) if s >= 4]:
      assert proc.poll() is None, "training ended before it could be killed"
      time.sleep(0.5)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  before = _checkpoint_steps(model_dir)
  assert before and before[-1] >= 4, before
  assert "SwitchFFN" in open(model_dir / "operative_config.gin").read()

  log = _cli(workdir, model_dir, *TRAIN, f"utils.run.train_steps = {before[-1] + 4}")
  assert f"model.ckpt-{before[-1]}" in log  # restored, not re-initialised
  after = _checkpoint_steps(model_dir)
  assert after[-1] == before[-1] + 4
  assert before[-1] in after
  losses = _scalars(model_dir, "loss")
  assert losses and all(0.0 < v < 20.0 for v in losses), losses
  assert _scalars(model_dir, "moe/encoder/block_000/layer_001/SwitchFFN/dropped_fraction")

  log = _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_text_span_corruption"',
             'utils.run.mode = "perplexity_eval"', 'utils.run.dataset_split = "validation"',
             f"utils.run.eval_checkpoint_step = {after[-1]}")
  match = re.search(r"neg_log_perplexity = (-?[0-9.]+)", log)
  assert match, log[-3000:]
  assert -20.0 < float(match.group(1)) < 0.0


def test_finetune_on_a_glue_shaped_task(workdir):
  pretrained = workdir / "model"
  if not _checkpoint_steps(pretrained):
    pytest.skip("needs the checkpoint of test_train_sigkill_resume_and_evaluate")
  model_dir = workdir / "finetuned"
  step = _checkpoint_steps(pretrained)[-1]
  _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"', 'utils.run.mode = "train"',
       f'utils.run.init_checkpoint = "{pretrained}/model.ckpt-{step}"',
       f"utils.run.train_steps = {step + 4}", "utils.run.save_checkpoints_steps = 4",
       "mtf_switch.SwitchFFN.expert_dropout_rate = 0.4")
  # t5's convention: fine-tuning continues the pre-trained global step.
  assert _checkpoint_steps(model_dir)[-1] == step + 4
  config = open(model_dir / "operative_config.gin").read()
  assert "expert_dropout_rate = 0.4" in config
  # Evaluation decodes: the Switch layers run in Mesh-TF's incremental (one token) mode.
  log = _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"', 'utils.run.mode = "eval"',
             "utils.run.eval_dataset_fn = @t5.models.mesh_transformer.mesh_eval_dataset_fn",
             "mesh_eval_dataset_fn.mixture_or_task_name = %MIXTURE_NAME",
             "Bitransformer.decode.max_decode_length = 8",
             'utils.run.dataset_split = "validation"', f"utils.run.eval_checkpoint_step = {step + 4}")
  match = re.search(r"e2e_sst2/accuracy at step \d+: ([0-9.]+)", log)
  assert match, log[-3000:]
  assert 0.0 <= float(match.group(1)) <= 100.0
