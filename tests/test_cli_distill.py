"""recipes/distill.gin through the command line: the pre-trained tiny Switch model (the
session's ``pretrained`` checkpoint, tests/conftest.py) as the teacher of a dense student.

The student starts from the teacher's non-expert weights, trains, and is evaluated on its own.
A file of its own so that pytest-xdist can run it beside tests/test_cli_end_to_end.py, which
starts from the same checkpoint.
"""


import numpy as np

from switch_experiments import run_results
from tests.e2e.cli import run_cli as _cli

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


def test_distill_recipe_starts_the_student_from_the_teachers_non_expert_weights(pretrained):
  import tensorflow as tf

  workdir = pretrained["workdir"]
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
