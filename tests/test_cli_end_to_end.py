"""The t5_mesh_transformer command line, end to end, with a tiny Switch model on CPU.

One module-scoped run directory and one pre-trained checkpoint (the ``pretrained`` fixture):
train, SIGKILL mid-training, rerun on a two-language mixture (the global step continues from
the last checkpoint). The tests check that run, evaluate it per language, and from its
checkpoint run the Section 4 recipes: fine-tune on a GLUE-shaped (SST-2 TSV) task with
recipes/finetune.gin and evaluate its accuracy, and distil the Switch model into a dense
student with recipes/distill.gin. If the pre-training fails, every test that needs its
checkpoint errors with the pre-training's failure (none is skipped).

Results are read the way the tools read them (tools/run_results.py): from checkpoint files and
TensorBoard events, not from the logs. Seven command-line processes in all.
"""

import inspect
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(REPO, "tests", "e2e", "tiny_switch_cpu.gin")
sys.path.insert(0, os.path.join(REPO, "tools"))

import finetune_sst2  # noqa: E402  (tools/)
import multilingual  # noqa: E402
import run_results  # noqa: E402


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


# A limit against a hung run, not a speed check: on the 2-core machine shared with other jobs
# (load average 10) one fine-tuning run of this file took 11 minutes.
CLI_TIMEOUT = 1800


def _cli(workdir, model_dir, *gin_params, timeout=CLI_TIMEOUT, wait=True, gin_files=()):
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
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # no orphan run left holding the CPU
    proc.wait()
    raise
  text = open(log.name, encoding="utf-8", errors="replace").read()
  assert proc.returncode == 0, text[-4000:]
  return text


_checkpoint_steps = run_results.checkpoint_steps

TRAIN = ['MIXTURE_NAME = "e2e_text_span_corruption"', 'utils.run.mode = "train"',
         "utils.run.save_checkpoints_steps = 4"]
LANGUAGES = 'MIXTURE_NAME = "e2e_languages"'


@pytest.fixture(scope="module")
def pretrained(workdir):
  """Kill training at a checkpoint boundary with SIGKILL, then rerun it (on the language
  mixture: the data is not in the checkpoint, the weights and the global step are).

  Returns {"model_dir", "before": checkpoint steps after the kill, "after": after the rerun,
  "resume_log"}. A failure here errors every test that uses the checkpoint.
  """
  model_dir = workdir / "model"
  proc, _ = _cli(workdir, model_dir, *TRAIN, "utils.run.train_steps = 400", wait=False)
  # A limit, not a speed check: a loaded machine took over 400 s to this first checkpoint.
  deadline = time.time() + 900
  try:
    while time.time() < deadline and not [s for s in _checkpoint_steps(model_dir) if s >= 4]:
      assert proc.poll() is None, "training ended before it could be killed"
      time.sleep(0.5)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  before = _checkpoint_steps(model_dir)
  assert before and before[-1] >= 4, f"no checkpoint at step 4 or later in 900 s: {before}"
  resume_log = _cli(workdir, model_dir, *TRAIN, LANGUAGES,
                    f"utils.run.train_steps = {before[-1] + 4}")
  return {"model_dir": model_dir, "before": before, "after": _checkpoint_steps(model_dir),
          "resume_log": resume_log}


def test_train_sigkill_and_resume(pretrained):
  """The rerun continues the global step from the last checkpoint the killed run saved, and
  no earlier checkpoint is lost."""
  model_dir, before, after = pretrained["model_dir"], pretrained["before"], pretrained["after"]
  assert "SwitchFFN" in open(model_dir / "operative_config.gin").read()
  assert f"model.ckpt-{before[-1]}" in pretrained["resume_log"]  # restored, not re-initialised
  assert after[-1] == before[-1] + 4
  assert before[-1] in after
  scalars = run_results.read_scalars(str(model_dir))
  losses = list(scalars["loss"].values())
  assert losses and all(0.0 < v < 20.0 for v in losses), losses
  dropped = scalars["moe/encoder/block_000/layer_001/SwitchFFN/dropped_fraction"]
  assert dropped and all(0.0 <= v <= 1.0 for v in dropped.values()), dropped


def test_language_mixture_is_evaluated_per_language(workdir, pretrained):
  """Section 4.3's set-up in small: the model trained on a temperature-sampled mixture, then
  one perplexity per language, read back the way tools/multilingual.py reads them."""
  model_dir, step = pretrained["model_dir"], pretrained["after"][-1]
  _cli(workdir, model_dir, LANGUAGES, 'utils.run.mode = "perplexity_eval"',
       'utils.run.dataset_split = "validation"', f"utils.run.eval_checkpoint_step = {step}",
       "utils.run.eval_dataset_fn = @t5.models.mesh_transformer.mesh_eval_dataset_fn",
       "mesh_eval_dataset_fn.mixture_or_task_name = %MIXTURE_NAME")
  per_language = multilingual.per_task(run_results.perplexity_at(str(model_dir), step))
  assert sorted(per_language) == ["e2e_lang_plain", "e2e_lang_upper"], per_language
  assert all(-20.0 < v < 0.0 for v in per_language.values())
  # Two different texts: the upper-cased one is not scored the same as the plain one.
  assert per_language["e2e_lang_plain"] != per_language["e2e_lang_upper"]
  assert [multilingual.language_of(t, sorted(per_language)) for t in sorted(per_language)] == [
      "plain", "upper"]


def test_finetune_recipe_on_a_glue_shaped_task(workdir, pretrained):
  """recipes/finetune.gin from the pre-trained checkpoint, every checkpoint evaluated with
  recipes/finetune_eval.gin, read back the way tools/finetune_sst2.py reads it."""
  step = pretrained["after"][-1]
  pretrained = pretrained["model_dir"]
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
  _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"', 'utils.run.dataset_split = "validation"',
       f"utils.run.eval_checkpoint_step = {[step + 2, step + 4]}",
       gin_files=recipe + ["recipes/finetune_eval.gin"])
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


def test_distill_recipe_starts_the_student_from_the_teachers_non_expert_weights(workdir,
                                                                              pretrained):
  import tensorflow as tf

  teacher = f"{pretrained['model_dir']}/model.ckpt-{pretrained['after'][-1]}"
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
  _cli(workdir, model_dir, *common, 'utils.run.mode = "perplexity_eval"',
       'utils.run.dataset_split = "validation"', "utils.run.eval_checkpoint_step = 2",
       "StudentTeacher.fraction_soft = 0.0", gin_files=["recipes/distill.gin"])
  (value,) = run_results.perplexity_at(str(model_dir), 2).values()
  assert -20.0 < value < 0.0
