"""The t5_mesh_transformer command line, end to end, with a tiny Switch model on CPU.

One module-scoped run directory: train, SIGKILL mid-training, rerun (the global step continues
from the last checkpoint), evaluate perplexity; then, from that checkpoint, the Section 4
recipes: fine-tune on a GLUE-shaped (SST-2 TSV) task with recipes/finetune.gin and evaluate its
accuracy, distil the Switch model into a dense student with recipes/distill.gin, and train on a
two-language mixture with a per-language evaluation.
"""

import inspect
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(REPO, "tests", "e2e", "tiny_switch_cpu.gin")
sys.path.insert(0, os.path.join(REPO, "tools"))

import cli_runs  # noqa: E402  (tools/)
import finetune_sst2  # noqa: E402
import multilingual  # noqa: E402


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
  _write_corpus(root / "corpus.txt")
  _write_sst2(root / "glue" / "SST-2")
  _write_languages(root)
  return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return make_workdir(tmp_path_factory.mktemp("e2e"))


def _cli(workdir, model_dir, *gin_params, timeout=600, wait=True, gin_files=()):
  env = dict(os.environ, E2E_DIR=str(workdir), PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             MTF_SWITCH_CACHE_DIR=str(workdir / "cache"))
  args = [sys.executable, "-m", "mtf_switch.cli", f"--model_dir={model_dir}",
          "--module_import=tests.e2e.e2e_tasks", f"--gin_file={GIN}"]
  args += [f"--gin_file={g}" for g in gin_files]
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


_checkpoint_steps = cli_runs.checkpoint_steps


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


def _pretrained_step(workdir):
  steps = _checkpoint_steps(workdir / "model")
  if not steps:
    pytest.skip("needs the checkpoint of test_train_sigkill_resume_and_evaluate")
  return steps[-1]


def test_finetune_recipe_on_a_glue_shaped_task(workdir):
  """recipes/finetune.gin from the pre-trained checkpoint, every checkpoint evaluated with
  recipes/finetune_eval.gin, read back the way tools/finetune_sst2.py reads it."""
  step = _pretrained_step(workdir)
  pretrained = workdir / "model"
  model_dir = workdir / "finetuned"
  recipe = ["recipes/finetune.gin"]
  _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"', 'utils.run.mode = "train"',
       f'utils.run.init_checkpoint = "{pretrained}/model.ckpt-{step}"',
       f"utils.run.train_steps = {step + 4}", "utils.run.save_checkpoints_steps = 2",
       gin_files=recipe)
  # t5's convention: fine-tuning continues the pre-trained global step.
  assert _checkpoint_steps(model_dir)[-2:] == [step + 2, step + 4]
  config = open(model_dir / "operative_config.gin").read()
  assert "expert_dropout_rate = 0.4" in config
  assert "dropout_rate = 0.1" in config
  # Evaluation decodes: the Switch layers run in Mesh-TF's incremental (one token) mode.
  log = _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"',
             'utils.run.dataset_split = "validation"',
             f"utils.run.eval_checkpoint_step = {[step + 2, step + 4]}",
             gin_files=recipe + ["recipes/finetune_eval.gin"])
  assert re.search(r"e2e_sst2/accuracy at step \d+: ([0-9.]+)", log), log[-3000:]
  accuracy = finetune_sst2.dev_metrics(str(model_dir), "e2e_sst2")
  assert sorted(accuracy) == [step + 2, step + 4]
  assert all(0.0 <= v <= 100.0 for v in accuracy.values())
  best = finetune_sst2.best_and_last(accuracy)
  assert best["last_step"] == step + 4 and best["best"] == max(accuracy.values())


# The dense student of tiny_switch_cpu.gin: the same stacks with DenseReluDense for SwitchFFN.
_DISTILL_PAIR = [
    "student/encoder/make_layer_stack.layers = "
    "[@transformer_layers.SelfAttention, @transformer_layers.DenseReluDense]",
    "student/decoder/make_layer_stack.layers = [@transformer_layers.SelfAttention, "
    "@transformer_layers.EncDecAttention, @transformer_layers.DenseReluDense]",
    "teacher/encoder/make_layer_stack.layers = "
    "[@transformer_layers.SelfAttention, @mtf_switch.SwitchFFN]",
    "teacher/decoder/make_layer_stack.layers = [@transformer_layers.SelfAttention, "
    "@transformer_layers.EncDecAttention, @mtf_switch.SwitchFFN]",
]


def test_distill_recipe_starts_the_student_from_the_teachers_non_expert_weights(workdir):
  import tensorflow as tf

  step = _pretrained_step(workdir)
  teacher = f"{workdir / 'model'}/model.ckpt-{step}"
  model_dir = workdir / "student"
  common = ['MIXTURE_NAME = "e2e_text_span_corruption"', *_DISTILL_PAIR]
  _cli(workdir, model_dir, *common, 'utils.run.mode = "train"', "utils.run.train_steps = 2",
       "utils.run.save_checkpoints_steps = 2", f'StudentTeacher.teacher_checkpoint = "{teacher}"',
       gin_files=["recipes/distill.gin"])
  config = open(model_dir / "operative_config.gin").read()
  assert "StudentTeacher.fraction_soft = 0.25" in config

  start = tf.train.load_checkpoint(f"{model_dir}/model.ckpt-0")
  teacher_weights = tf.train.load_checkpoint(teacher)
  student_names = [n for n, _ in tf.train.list_variables(f"{model_dir}/model.ckpt-0")
                   if n.startswith("student/") and "slot" not in n]
  shared = [n for n in student_names if teacher_weights.has_tensor(n[len("student/"):])]
  fresh = sorted(set(student_names) - set(shared))
  # Everything but the expert layers' dense FFNs comes from the teacher.
  assert fresh and all("DenseReluDense" in n for n in fresh), fresh
  assert any("SelfAttention" in n for n in shared) and "student/shared/embedding" in shared
  for name in shared:
    np.testing.assert_array_equal(start.get_tensor(name),
                                  teacher_weights.get_tensor(name[len("student/"):]))

  # With fraction_soft = 0 only the student is built: its own perplexity.
  log = _cli(workdir, model_dir, *common, 'utils.run.mode = "perplexity_eval"',
             'utils.run.dataset_split = "validation"', "utils.run.eval_checkpoint_step = 2",
             "StudentTeacher.fraction_soft = 0.0", gin_files=["recipes/distill.gin"])
  match = re.search(r"neg_log_perplexity = (-?[0-9.]+)", log)
  assert match and -20.0 < float(match.group(1)) < 0.0, log[-3000:]


def test_language_mixture_is_evaluated_per_language(workdir):
  """Section 4.3's set-up in small: train on a temperature-sampled mixture, then one
  perplexity per language, read back the way tools/multilingual.py reads them."""
  model_dir = workdir / "languages_model"
  common = ['MIXTURE_NAME = "e2e_languages"']
  _cli(workdir, model_dir, *common, 'utils.run.mode = "train"', "utils.run.train_steps = 2",
       "utils.run.save_checkpoints_steps = 2")
  _cli(workdir, model_dir, *common, 'utils.run.mode = "perplexity_eval"',
       'utils.run.dataset_split = "validation"', "utils.run.eval_checkpoint_step = 2",
       "utils.run.eval_dataset_fn = @t5.models.mesh_transformer.mesh_eval_dataset_fn",
       "mesh_eval_dataset_fn.mixture_or_task_name = %MIXTURE_NAME")
  found = {}
  for directory in cli_runs.eval_dirs(str(model_dir)):
    found[os.path.basename(directory)] = cli_runs.read_scalars(directory)["neg_log_perplexity"][2]
  per_language = multilingual.per_task(found)
  assert sorted(per_language) == ["e2e_lang_plain", "e2e_lang_upper"], found
  assert all(-20.0 < v < 0.0 for v in per_language.values())
  assert [multilingual.language_of(t, sorted(per_language)) for t in sorted(per_language)] == [
      "plain", "upper"]
