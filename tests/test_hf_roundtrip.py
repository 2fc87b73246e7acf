"""Round trip through the command line: a tiny Switch model trained by switch_mesh_transformer
(the session's ``pretrained`` checkpoint, tests/conftest.py) -> export to HF -> HF's logits
equal the project's; -> import again -> the same tensors, bit for bit. And an imported HF model
fine-tuned with the recipes on the SST-2 TSV task."""

import re

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch.convert import from_hf, mtf_run, to_hf
from tests import hf_tiny
from tests.e2e.cli import GIN, make_workdir
from tests.e2e.cli import checkpoint_steps as _checkpoint_steps
from tests.e2e.cli import run_cli as _cli

pytestmark = pytest.mark.slow
INPUTS_LENGTH, TARGETS_LENGTH, CAPACITY = 32, 8, 6
CLI_TIMEOUT = 1800  # a few steps took 10 minutes on the shared 2-core machine (load ~11)
E2E_VOCAB = 768  # the e2e tasks' 600 pieces + 100 extra ids, padded by Mesh-TF to x128
# HF's routing in the project's model: one group per sequence, absolute capacity.
HF_ROUTING = [f"encoder/mtf_switch.SwitchFFN.group_size = {INPUTS_LENGTH}",
              f"decoder/mtf_switch.SwitchFFN.group_size = {TARGETS_LENGTH}",
              f"mtf_switch.SwitchFFN.fixed_expert_capacity = {CAPACITY}"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return make_workdir(tmp_path_factory.mktemp("hf_e2e"))


def _model_variables(prefix):
  return {name: tf.train.load_variable(prefix, name)
          for name, _ in tf.train.list_variables(prefix)
          if name != "global_step" and not to_hf.SLOT_PATTERN.search(name)}


def test_imported_model_finetunes_on_sst2_with_the_recipes(workdir, tmp_path):
  hf_dir, imported = tmp_path / "hf", tmp_path / "imported"
  hf_tiny.switch_model(vocab_size=E2E_VOCAB).save_pretrained(hf_dir)
  from_hf.convert(str(hf_dir), str(imported), inputs_length=INPUTS_LENGTH,
                  targets_length=TARGETS_LENGTH, progress=lambda line: None)
  model_dir = tmp_path / "finetuned"
  gin_files = [str(imported / "model.gin"), "mesh/cpu_data_parallel.gin",
               "recipes/finetune.gin"]
  common = ['utils.run.batch_size = ("sequences_per_batch", 4)']
  # _cli always passes the e2e model gin first; the imported model's gin then overrides it.
  _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"', 'utils.run.mode = "train"',
       f'utils.run.init_checkpoint = "{imported}/model.ckpt-0"', "utils.run.train_steps = 5",
       "utils.run.save_checkpoints_steps = 5", *common, gin_files=gin_files, timeout=CLI_TIMEOUT)
  # The imported global step is 0, so the Estimator also keeps a step-0 checkpoint.
  assert _checkpoint_steps(model_dir) == [0, 5]
  config = open(model_dir / "operative_config.gin").read()
  assert "fixed_expert_capacity = 64" in config and "expert_dropout_rate = 0.4" in config
  # Fine-tuning moved the imported weights.
  before = tf.train.load_variable(f"{imported}/model.ckpt-0",
                                  "encoder/block_000/layer_003/SwitchFFN/router/kernel")
  after = tf.train.load_variable(f"{model_dir}/model.ckpt-5",
                                 "encoder/block_000/layer_003/SwitchFFN/router/kernel")
  assert not np.array_equal(before, after)
  log = _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"',
             'utils.run.dataset_split = "validation"', "utils.run.eval_checkpoint_step = [5]",
             *common, gin_files=gin_files + ["recipes/finetune_eval.gin"], timeout=CLI_TIMEOUT)
  match = re.search(r"e2e_sst2/accuracy at step 5: ([0-9.]+)", log)
  assert match, log[-3000:]
  assert 0.0 <= float(match.group(1)) <= 100.0


# After the fine-tuning test: under pytest-xdist the pre-training may still be running in the
# other worker when this file starts.
def test_trained_checkpoint_exports_to_hf_and_back(pretrained, tmp_path):
  from transformers import SwitchTransformersForConditionalGeneration
  model_dir = pretrained["model_dir"]
  checkpoint = str(model_dir / f"model.ckpt-{pretrained['after'][-1]}")
  assert to_hf.resolve_checkpoint(str(model_dir)) == checkpoint  # the directory's latest
  assert any(to_hf.SLOT_PATTERN.search(n) for n, _ in tf.train.list_variables(checkpoint))

  hf_dir = tmp_path / "hf"
  spec = to_hf.convert(str(model_dir), [GIN], [], str(hf_dir), expert_capacity=CAPACITY)
  assert spec.is_switch and spec.encoder_sparse == (True, True) and spec.tied_logits
  hf = SwitchTransformersForConditionalGeneration.from_pretrained(hf_dir).eval()
  assert hf.config.vocab_size == E2E_VOCAB and hf.config.expert_capacity == CAPACITY

  inputs, targets = hf_tiny.ids(seed=5, batch=4, inputs_length=INPUTS_LENGTH,
                                targets_length=TARGETS_LENGTH)
  reference = hf_tiny.hf_run(hf, inputs, targets)
  run = mtf_run.run_logits([GIN], checkpoint, inputs, targets, E2E_VOCAB, HF_ROUTING)
  diff = float(np.abs(run.logits - reference.logits).max())
  dropped = sum(int((r.kept == 0).sum()) for r in reference.routing)
  print(f"round trip: max |logits diff| = {diff:.3g}, {dropped} tokens dropped")
  assert diff < 1e-4
  for ours, theirs in zip(run.routing.values(), reference.routing, strict=True):
    np.testing.assert_array_equal(ours["kept"], theirs.kept)

  reimported = tmp_path / "reimported"
  # The CLI saved bfloat16 masters; HF holds their exact float32 widening; back to bfloat16.
  from_hf.convert(str(hf_dir), str(reimported), inputs_length=INPUTS_LENGTH,
                  targets_length=TARGETS_LENGTH, progress=lambda line: None, dtype="bfloat16")
  original = _model_variables(checkpoint)
  again = _model_variables(str(reimported / "model.ckpt-0"))
  assert sorted(again) == sorted(original)
  assert original["shared/embedding"].dtype.name == "bfloat16"
  for name, value in original.items():
    assert again[name].dtype == value.dtype and np.array_equal(again[name], value), name
