"""google/switch-xxl-128 as its download is laid out, at tiny widths: imported and run.

The download is not what transformers saves: ``convert_big_switch.py`` renamed the T5X
checkpoint's tensors (mtf_switch/convert/released.py cites the sources), so it holds 24 + 24
blocks with GEGLU in every FFN and expert (``mlp.wi_0``, ``mlp.wi_1``,
``mlp.experts.expert_<e>.wi_0`` ...), one input embedding (``shared.weight``) and a separate
softmax named ``decoder.lm_head.weight``, beside a config.json that says 48 + 12 ungated
blocks with exact GELU. transformers cannot build this model, so the reference here is HF's
own Switch model (its attention, router, capacity and expert dispatch) with every FFN module
swapped for HF's T5 GEGLU module (``T5DenseGatedActDense``, tanh GELU), whose state dict is
exactly the release's names.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

from mtf_switch.convert import from_hf, mtf_run, released, to_hf
from mtf_switch.convert.spec import ConversionError
from tests import hf_tiny
from tests.test_hf_parity import TOLERANCE, _check_routing, _max_logit_diff
from tests.test_hf_structure import SWITCH_XXL_SHAPE_UNGATED

# The widths shrunk (config.json keeps its other fields: 48 + 12 blocks, step 2, 64 heads,
# exact "gelu", router settings); capacity 2 so that both frameworks drop tokens.
TINY = dict(d_model=32, d_kv=2, d_ff=48, num_experts=4, vocab_size=hf_tiny.VOCAB,
            expert_capacity=2)
# Mesh-TF's gin lines that carry a width or a length (the rest must be the released file's).
WIDTH_LINES = ("# ", "d_model =", "d_ff =", "d_kv =", "mtf_switch.SwitchFFN.num_experts =",
               "mtf_switch.SwitchFFN.fixed_expert_capacity =",
               "encoder/mtf_switch.SwitchFFN.group_size =",
               "decoder/mtf_switch.SwitchFFN.group_size =", "utils.run.sequence_length =")


def _gated_reference(seed=7):
  """HF's Switch model of the release's tensor structure with GEGLU FFNs (module docstring)."""
  from transformers import T5Config
  from transformers.models.switch_transformers import modeling_switch_transformers as hf
  from transformers.models.t5.modeling_t5 import T5DenseGatedActDense
  model = hf_tiny.switch_model(seed=seed, **dict(SWITCH_XXL_SHAPE_UNGATED, **TINY))
  gated = T5Config(d_model=TINY["d_model"], d_ff=TINY["d_ff"], dropout_rate=0.0,
                   feed_forward_proj="gated-gelu")
  assert gated.dense_act_fn == "gelu_new"  # T5X's gelu: the tanh approximation
  torch.manual_seed(seed + 1)
  for module in model.modules():
    if isinstance(module, hf.SwitchTransformersLayerFF):
      if isinstance(module.mlp, hf.SwitchTransformersDenseActDense):
        module.mlp = T5DenseGatedActDense(gated)
      else:
        for expert in list(module.mlp.experts):
          module.mlp.experts[expert] = T5DenseGatedActDense(gated)
  return model.eval()


def _release_dir(path, model, config_overrides=None):
  """The model's tensors under the names convert_big_switch.py writes, and switch-xxl-128's
  config.json fields at TINY widths; returns the config written."""
  from safetensors.torch import save_file
  tensors = {}
  for name, value in model.state_dict().items():
    if name.endswith("embed_tokens.weight"):
      continue  # T5X has one token_embedder: shared.weight (these are copies of it here)
    tensors["decoder.lm_head.weight" if name == "lm_head.weight" else name] = (
        value.detach().clone().contiguous())
  path.mkdir()
  save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
  config = dict(released.SWITCH_XXL_128_CONFIG, **TINY, **(config_overrides or {}))
  (path / "config.json").write_text(json.dumps(config))
  return config


def _expected_lines(where):
  odd = lambda n: [i for i in range(n) if i % 2 == 1]  # noqa: E731
  return [
      f"{where / 'config.json'}: dense_act_fn 'gelu' read as the tanh GELU (HF's 'gelu_new', "
      f"Mesh-TF's gelu): the gated FFN tensors (wi_0, wi_1) are a T5X checkpoint renamed by "
      f"convert_big_switch.py, which no HF model runs, and T5X's 'gelu' is the tanh "
      f"approximation"] + [
      f"{where}: config.json and the tensors disagree on {stack}_sparse: config {n} blocks, "
      f"sparse at {odd(n)}, tensors 24 blocks, sparse at {odd(24)}; following the tensors"
      for stack, n in (("encoder", 48), ("decoder", 12))] + [
      f"{where}: config.json and the tensors disagree on gated: config ungated FFNs (wi), "
      f"tensors gated FFNs (wi_0, wi_1); following the tensors",
      f"{where}: config.json and the tensors disagree on tied_logits: config softmax tied to "
      f"the embedding, tensors separate softmax (decoder.lm_head.weight); following the "
      f"tensors"]


def _structure_differences(ours, theirs):
  """Line pairs of two gin files that differ other than in a width or length line."""
  assert len(ours) == len(theirs), (len(ours), len(theirs))
  return [(a, b) for a, b in zip(ours, theirs) if a != b
          and not any(a.startswith(k) and b.startswith(k) for k in WIDTH_LINES)]


# 48 blocks of 64 heads built by HF and by Mesh-TF: ~4 minutes here, the slow tier's.
@pytest.mark.slow
def test_release_layout_imports_runs_at_parity_and_is_not_exported(tmp_path):
  model = _gated_reference()
  hf_dir, mtf_dir = tmp_path / "switch-xxl-128", tmp_path / "mtf"
  _release_dir(hf_dir, model)
  inputs, targets = hf_tiny.ids(seed=8)
  reference = hf_tiny.hf_run(model, inputs, targets)

  lines = []
  spec = from_hf.convert(str(hf_dir), str(mtf_dir), inputs_length=inputs.shape[1],
                         targets_length=targets.shape[1], progress=lines.append)
  assert [line for line in lines if not line.startswith("[")] == _expected_lines(hf_dir)
  # The model the release's tensors hold, at tiny widths: released.py's switch_xxl_128 spec...
  full = dataclasses.replace(spec, d_model=4096, d_kv=64, d_ff=10240, num_experts=128,
                             vocab_size=32128, expert_capacity=64)
  assert full == released.released_spec("switch_xxl_128")
  # ... and its gin file, line for line but for widths and lengths.
  with open(f"{released.RELEASED_DIR}/switch_xxl_128.gin") as f:
    committed = f.read().splitlines()
  assert not _structure_differences((mtf_dir / "model.gin").read_text().splitlines(),
                                    committed)

  checkpoint = str(mtf_dir / "model.ckpt-0")
  run = mtf_run.run_logits([str(mtf_dir / "model.gin")], checkpoint, inputs, targets,
                           hf_tiny.VOCAB)
  assert any(n.endswith("SwitchFFN/wi_1/kernel") for n in run.variable_names)
  assert "decoder/logits/kernel" in run.variable_names
  diff = _max_logit_diff(reference, run)
  dropped = _check_routing(reference, run, inputs.shape[0], expect_drops=True)
  print(f"switch-xxl-128 layout: {dropped} tokens dropped, max |logits diff| = {diff:.3g}")
  assert diff < TOLERANCE

  # No HF class runs a gated Switch model: the export refuses it, naming why.
  with pytest.raises(ConversionError, match="no counterpart in HF's SwitchTransformers"):
    to_hf.convert(checkpoint, [str(mtf_dir / "model.gin")], [], str(tmp_path / "exported"))
  assert not (tmp_path / "exported").exists()


def test_gin_structure_check_sees_a_changed_layer():
  with open(f"{released.RELEASED_DIR}/switch_xxl_128.gin") as f:
    committed = f.read().splitlines()
  changed = [line.replace("geglu", "gelu") for line in committed]
  assert _structure_differences(changed, committed)
  widened = [line.replace("= 4096", "= 32") for line in committed]
  assert not _structure_differences(widened, committed)


def test_exact_gelu_is_refused_without_the_gated_tensors(tmp_path):
  """The rule is the tensors': the same config.json over ungated tensors (a model HF can save
  and would run with exact GELU) stays an error."""
  model = hf_tiny.switch_model(**dict(SWITCH_XXL_SHAPE_UNGATED, **TINY))
  _release_dir(tmp_path / "ungated", model)
  with pytest.raises(ConversionError, match="dense_act_fn activation 'gelu' is not supported"):
    from_hf.convert(str(tmp_path / "ungated"), str(tmp_path / "out"),
                    progress=lambda line: None)
  assert not (tmp_path / "out").exists()


def test_mixed_gated_and_ungated_ffns_are_refused(tmp_path):
  from safetensors.torch import load_file, save_file
  hf_dir = tmp_path / "mixed"
  _release_dir(hf_dir, _gated_reference())
  tensors = load_file(str(hf_dir / "model.safetensors"))
  prefix = "encoder.block.0.layer.1.mlp."
  tensors[prefix + "wi.weight"] = tensors.pop(prefix + "wi_0.weight")
  del tensors[prefix + "wi_1.weight"]
  save_file(tensors, str(hf_dir / "model.safetensors"))
  with pytest.raises(ConversionError, match=r"'encoder\.block\.0\.layer\.1\.mlp\.wi\.weight' "
                                            r"\(ungated FFN\) and .* \(gated FFN\)"):
    from_hf.convert(str(hf_dir), str(tmp_path / "out"), progress=lambda line: None)


def test_both_softmax_names_are_refused(tmp_path):
  from safetensors.torch import load_file, save_file
  hf_dir = tmp_path / "two_softmaxes"
  _release_dir(hf_dir, _gated_reference(), config_overrides=dict(dense_act_fn="gelu_new"))
  tensors = load_file(str(hf_dir / "model.safetensors"))
  tensors["lm_head.weight"] = tensors["decoder.lm_head.weight"].clone()
  save_file(tensors, str(hf_dir / "model.safetensors"))
  with pytest.raises(ConversionError, match="both 'lm_head.weight' and "
                                            "'decoder.lm_head.weight'"):
    from_hf.convert(str(hf_dir), str(tmp_path / "out"), progress=lambda line: None)
