"""Hugging Face -> Mesh-TF import: the imported model's decoder logits and routing equal HF's.

Tiny random models (tests/hf_tiny.py) are saved with ``save_pretrained``, re-loaded with
``from_pretrained`` (what a user of the Hub gets), imported with ``mtf_switch.convert`` and
run in this process by the project's Mesh-TF Bitransformer built from the generated gin file,
on the same ids, in eval mode, float32.

What HF 5.24 does that the import has to match (read in modeling_switch_transformers.py and
checked here): each sequence is routed as one group (the router's cumsum runs over the
sequence dimension), with an absolute ``expert_capacity``, tokens claiming slots in position
order; a token over capacity gets a zero FFN output and keeps its residual (the project's
layer does the same); no router jitter in eval mode; the gate is the chosen expert's
probability. Capacity IS enforced in 5.24 (test (d) drops tokens in both).
"""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from mtf_switch.convert import from_hf, mtf_run
from tests import hf_tiny

TOLERANCE = 1e-4


def _import_and_run(model, tmp_path, inputs, targets):
  model.save_pretrained(tmp_path / "hf")
  reloaded = type(model).from_pretrained(tmp_path / "hf").eval()
  reference = hf_tiny.hf_run(reloaded, inputs, targets)
  from_hf.convert(str(tmp_path / "hf"), str(tmp_path / "mtf"),
                  inputs_length=inputs.shape[1], targets_length=targets.shape[1],
                  progress=lambda line: None)
  checkpoint = str(tmp_path / "mtf" / "model.ckpt-0")
  run = mtf_run.run_logits([str(tmp_path / "mtf" / "model.gin")], checkpoint, inputs, targets,
                           model.config.vocab_size)
  # Every variable of the built model is in the checkpoint and nothing else is.
  saved = {name for name, _ in tf.train.list_variables(checkpoint)} - {"global_step"}
  assert saved == set(run.variable_names)
  return reference, run


def _max_logit_diff(reference, run):
  vocab = reference.logits.shape[-1]
  assert run.logits.shape == reference.logits.shape[:-1] + (run.logits.shape[-1],)
  return float(np.abs(run.logits[..., :vocab] - reference.logits).max())


def _check_routing(reference, run, batch, expect_drops):
  assert len(run.routing) == len(reference.routing) > 0
  dropped = 0
  for (scope, ours), theirs in zip(run.routing.items(), reference.routing, strict=True):
    # One group per sequence: [groups, tokens_per_group] == [batch, length].
    assert ours["expert"].shape == theirs.expert.shape and ours["expert"].shape[0] == batch
    np.testing.assert_array_equal(ours["kept"], theirs.kept, err_msg=scope)
    kept = theirs.kept > 0
    # The project's TokenChoice holds expert 0 for a dropped token; compare the kept ones.
    np.testing.assert_array_equal(ours["expert"][kept], theirs.expert[kept], err_msg=scope)
    np.testing.assert_allclose(ours["gate"][kept], theirs.gate[kept], atol=1e-5, err_msg=scope)
    dropped += int((~kept).sum())
  if expect_drops:
    assert dropped > 0, "capacity was meant to be tight enough to drop tokens"
  else:
    assert dropped == 0
  return dropped


@pytest.mark.parametrize("tied", [True, False], ids=["tied_logits", "untied_logits"])
def test_switch_logits_and_routing_match_hf(tmp_path, tied):
  model = hf_tiny.switch_model(tie_word_embeddings=tied)
  inputs, targets = hf_tiny.ids()
  reference, run = _import_and_run(model, tmp_path, inputs, targets)
  diff = _max_logit_diff(reference, run)
  print(f"switch tied={tied}: max |logits diff| = {diff:.3g}")
  assert diff < TOLERANCE
  _check_routing(reference, run, inputs.shape[0], expect_drops=False)


def test_dense_t5_v11_logits_match_hf(tmp_path):
  model = hf_tiny.t5_v11_model()
  inputs, targets = hf_tiny.ids()
  reference, run = _import_and_run(model, tmp_path, inputs, targets)
  assert "decoder/logits/kernel" in run.variable_names
  assert any(name.endswith("DenseReluDense/wi_1/kernel") for name in run.variable_names)
  diff = _max_logit_diff(reference, run)
  print(f"t5 v1.1: max |logits diff| = {diff:.3g}")
  assert diff < TOLERANCE
  assert run.routing == {} and reference.routing == []


def test_tight_capacity_drops_the_same_tokens_as_hf(tmp_path):
  # 12 input tokens over 4 experts with 2 slots each: at least 4 of 12 tokens drop.
  model = hf_tiny.switch_model(expert_capacity=2, seed=3)
  inputs, targets = hf_tiny.ids(seed=4)
  reference, run = _import_and_run(model, tmp_path, inputs, targets)
  diff = _max_logit_diff(reference, run)
  dropped = _check_routing(reference, run, inputs.shape[0], expect_drops=True)
  print(f"switch capacity 2: {dropped} tokens dropped, max |logits diff| = {diff:.3g}")
  assert diff < TOLERANCE


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_fixed_expert_capacity_must_be_a_positive_integer(bad):
  from mtf_switch import layers
  with pytest.raises(ValueError, match="fixed_expert_capacity"):
    layers.SwitchFFN(fixed_expert_capacity=bad)
