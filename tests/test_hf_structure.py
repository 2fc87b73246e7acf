"""Hugging Face models as users save them, whose structure config.json alone does not give.

Each class is a tiny random model built by transformers 5.24 and saved with ``save_pretrained``:
a stored ``*_sparse_step``, every block sparse, different encoder/decoder depths, vocabularies
of 72 and 100 ids (Mesh-TF pads them to 128), an untied model with three distinct embeddings,
and switch-c-2048's config shape (its decoder fields describe fewer blocks than it says are
sparse). For each: the import matches HF's logits to 1e-4 with tokens dropped by both (tight
capacity); the export of the import gives HF the same logits; importing that export gives the
same tensors, bit for bit.
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch.convert import from_hf, mtf_run, structure, to_hf
from mtf_switch.convert.hf_files import HFTensors
from mtf_switch.convert.spec import from_hf_config
from tests import hf_tiny
from tests.test_hf_parity import TOLERANCE, _check_routing, _max_logit_diff

# switch-c-2048's config.json (mtf_switch/convert/released.py) at tiny widths: 15 encoder
# blocks, all sparse; the decoder fields say 12 blocks of which 15 sparse, which transformers
# builds as 12 dense blocks (step 12 // 15 = 0). 30 heads, relu, capacity 64 -> 2 here.
SWITCH_C_SHAPE = dict(num_layers=15, num_sparse_encoder_layers=15, num_decoder_layers=12,
                      num_sparse_decoder_layers=15, num_heads=30, d_kv=2, d_model=20, d_ff=24,
                      num_experts=4, dense_act_fn="relu")

# switch-xxl-128 (mtf_switch/convert/released.py) as far as transformers can build it: its
# tensors' 24 + 24 blocks, every other one sparse, 64 heads, one input embedding and a separate
# softmax, tanh GELU ("gelu_new", what T5X used) - but not its GEGLU: HF's Switch FFN has one
# wi, so HF cannot save the release's gating (tests/test_hf_switch_xxl_release.py imports a
# tiny copy of the release's own layout).
SWITCH_XXL_SHAPE_UNGATED = dict(num_layers=24, num_decoder_layers=24,
                                num_sparse_encoder_layers=12, num_sparse_decoder_layers=12,
                                num_heads=64, d_kv=2, dense_act_fn="gelu_new",
                                tie_word_embeddings=False)

CLASSES = {
    # Stored steps override num_sparse_*: 3 -> block 1 sparse of 4; 1 -> every decoder block.
    "stored_step": dict(encoder_sparse_step=3, decoder_sparse_step=1),
    "every_layer_sparse": dict(num_sparse_encoder_layers=4, num_sparse_decoder_layers=4),
    "different_depths": dict(num_layers=3, num_decoder_layers=5, num_sparse_encoder_layers=1,
                             num_sparse_decoder_layers=2),
    "vocab_72": dict(vocab_size=72),
    "vocab_100_untied": dict(vocab_size=100, tie_word_embeddings=False),
    "untied_three_embeddings": dict(tie_word_embeddings=False),
    "switch_c_shape": SWITCH_C_SHAPE,
    "switch_xxl_shape_ungated": SWITCH_XXL_SHAPE_UNGATED,
}


def _model(name):
  overrides = dict(CLASSES[name], expert_capacity=2)
  return hf_tiny.switch_model(seed=7, distinct_inputs=name == "untied_three_embeddings",
                              **overrides)


def _variables(prefix):
  return {name: tf.train.load_variable(prefix, name)
          for name, _ in tf.train.list_variables(prefix) if name != "global_step"}


# 48 blocks, built and run three times: 3-4 minutes here, the slow tier's (tests/conftest.py).
SLOW_CLASSES = ("switch_xxl_shape_ungated",)


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow)
                                  if name in SLOW_CLASSES else name for name in sorted(CLASSES)])
def test_class_imports_at_parity_and_round_trips(name, tmp_path):
  from transformers import SwitchTransformersForConditionalGeneration as HFSwitch
  model = _model(name)
  vocab = model.config.vocab_size
  hf_dir, mtf_dir = tmp_path / "hf", tmp_path / "mtf"
  model.save_pretrained(hf_dir)
  reloaded = HFSwitch.from_pretrained(hf_dir).eval()
  inputs, targets = hf_tiny.ids(seed=8, vocab=vocab)
  reference = hf_tiny.hf_run(reloaded, inputs, targets)

  lines = []
  spec = from_hf.convert(str(hf_dir), str(mtf_dir), inputs_length=inputs.shape[1],
                         targets_length=targets.shape[1], progress=lines.append)
  assert spec.encoder_sparse == tuple(b.is_sparse for b in reloaded.encoder.block)
  assert spec.decoder_sparse == tuple(b.is_sparse for b in reloaded.decoder.block)
  assert spec.separate_input_embeddings == (name == "untied_three_embeddings")
  # Every config here describes its tensors (transformers saved them): nothing to report.
  assert not [line for line in lines if "disagree" in line], lines
  checkpoint = str(mtf_dir / "model.ckpt-0")
  run = mtf_run.run_logits([str(mtf_dir / "model.gin")], checkpoint, inputs, targets, vocab)
  assert {n for n in _variables(checkpoint)} == set(run.variable_names)
  assert run.logits.shape[-1] == spec.mtf_vocab_size
  diff = _max_logit_diff(reference, run)
  dropped = _check_routing(reference, run, inputs.shape[0], expect_drops=True)
  print(f"{name}: {dropped} tokens dropped, max |logits diff| = {diff:.3g}")
  assert diff < TOLERANCE
  # The padding ids' logits are masked far below every real one.
  if spec.vocab_is_padded:
    assert run.logits[..., vocab:].max() < -1e8 < run.logits[..., :vocab].min()

  exported, again = tmp_path / "exported", tmp_path / "again"
  to_hf.convert(checkpoint, [str(mtf_dir / "model.gin")], [], str(exported))
  hf_again = HFSwitch.from_pretrained(exported).eval()
  assert hf_again.config.vocab_size == vocab
  np.testing.assert_array_equal(hf_tiny.hf_run(hf_again, inputs, targets).logits,
                                reference.logits)
  from_hf.convert(str(exported), str(again), inputs_length=inputs.shape[1],
                  targets_length=targets.shape[1], progress=lambda line: None)
  original, reimported = _variables(checkpoint), _variables(str(again / "model.ckpt-0"))
  assert sorted(reimported) == sorted(original)
  for variable, value in original.items():
    assert np.array_equal(reimported[variable], value), variable


def test_untied_three_embeddings_keep_their_own_tables(tmp_path):
  model = _model("untied_three_embeddings")
  model.save_pretrained(tmp_path / "hf")
  from_hf.convert(str(tmp_path / "hf"), str(tmp_path / "mtf"), progress=lambda line: None)
  saved = _variables(str(tmp_path / "mtf" / "model.ckpt-0"))
  assert "shared/embedding" not in saved
  for stack in ("encoder", "decoder"):
    np.testing.assert_array_equal(saved[f"{stack}/embedding"],
                                  getattr(model, stack).embed_tokens.weight.detach().numpy())
  np.testing.assert_array_equal(saved["decoder/logits/kernel"],
                                model.lm_head.weight.detach().numpy().T)


def test_padding_rows_are_zero_and_the_gin_binds_the_vocabulary(tmp_path):
  hf_tiny.switch_model(vocab_size=72).save_pretrained(tmp_path / "hf")
  from_hf.convert(str(tmp_path / "hf"), str(tmp_path / "mtf"), progress=lambda line: None)
  table = tf.train.load_variable(str(tmp_path / "mtf" / "model.ckpt-0"), "shared/embedding")
  assert table.shape == (128, 32) and not table[72:].any() and table[:72].any()
  assert "mtf_switch.hf_vocab.size = 72" in (tmp_path / "mtf" / "model.gin").read_text()


def test_tensors_win_over_a_config_that_describes_other_blocks(tmp_path):
  """switch-c-2048's release: the config's decoder is 12 dense blocks, its tensors are 15
  sparse ones; the import follows the tensors and names each disagreement in one line."""
  import json
  shape = dict(SWITCH_C_SHAPE, num_decoder_layers=15)  # what the release's tensors hold
  hf_tiny.switch_model(**shape).save_pretrained(tmp_path / "hf")
  config_path = tmp_path / "hf" / "config.json"
  config = json.loads(config_path.read_text())
  config.update(num_decoder_layers=12, num_sparse_decoder_layers=15, decoder_sparse_step=0,
                num_experts=8)
  config_path.write_text(json.dumps(config))
  config_spec = from_hf_config(config)
  assert config_spec.decoder_sparse == (False,) * 12
  lines = []
  spec = structure.spec_from_checkpoint(config_spec, config, HFTensors(str(tmp_path / "hf")),
                                        "hf", lines.append)
  assert spec.decoder_sparse == (True,) * 15 and spec.num_experts == 4
  assert len(lines) == 2, lines
  assert "decoder_sparse" in lines[0] and "12 blocks, sparse at []" in lines[0]
  assert "num_experts" in lines[1] and "config 8, tensors 4" in lines[1]
  reported = []
  from_hf.convert(str(tmp_path / "hf"), str(tmp_path / "mtf"), progress=reported.append)
  assert sum("disagree" in line for line in reported) == 2
