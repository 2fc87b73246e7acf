"""Import of bad Hugging Face directories: a clear error naming the problem, nothing written.

And the same tensors whatever the HF file layout (one safetensors file, shards with an index,
a PyTorch pickle).
"""

import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import torch
from safetensors.torch import load_file, save_file

from mtf_switch.convert import __main__ as cli
from mtf_switch.convert import from_hf
from mtf_switch.convert.spec import ConversionError
from tests import hf_tiny

QUIET = dict(progress=lambda line: None)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("hf") / "switch"
  hf_tiny.switch_model(d_model=16, d_ff=16, num_heads=2).save_pretrained(path)
  return path


def _copy_with(hf_dir, tmp_path, edit_tensors=None, edit_config=None):
  out = tmp_path / "bad_hf"
  out.mkdir()
  tensors = load_file(str(hf_dir / "model.safetensors"))
  if edit_tensors:
    edit_tensors(tensors)
  save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
  config = json.loads((hf_dir / "config.json").read_text())
  if edit_config:
    edit_config(config)
  (out / "config.json").write_text(json.dumps(config))
  return out


def _assert_fails(source, tmp_path, *needles):
  output = tmp_path / "imported"
  with pytest.raises(ConversionError) as error:
    from_hf.convert(str(source), str(output), **QUIET)
  for needle in needles:
    assert needle in str(error.value)
  assert not output.exists()
  assert not [n for n in os.listdir(tmp_path) if n.startswith(".import-")]
  return str(error.value)


def test_directory_without_config_json(hf_dir, tmp_path):
  source = tmp_path / "no_config"
  source.mkdir()
  (source / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
  _assert_fails(source, tmp_path, "config.json", str(source))


def test_directory_without_weights(hf_dir, tmp_path):
  source = tmp_path / "no_weights"
  source.mkdir()
  (source / "config.json").write_text((hf_dir / "config.json").read_text())
  _assert_fails(source, tmp_path, "no weights")


@pytest.mark.parametrize("field,value,needle", [
    ("relative_attention_max_distance", 64, "relative_attention_max_distance=64"),
    ("dense_act_fn", "gelu", "'gelu'"),
    ("router_bias", True, "router_bias=True"),
    ("model_type", "mt5", "model_type='mt5'"),
])
def test_config_the_project_cannot_express(hf_dir, tmp_path, field, value, needle):
  source = _copy_with(hf_dir, tmp_path, edit_config=lambda c: c.update({field: value}))
  _assert_fails(source, tmp_path, needle)


def test_missing_tensor(hf_dir, tmp_path):
  name = "decoder.block.1.layer.2.mlp.experts.expert_3.wo.weight"
  source = _copy_with(hf_dir, tmp_path, edit_tensors=lambda t: t.pop(name))
  _assert_fails(source, tmp_path, "missing", name)


def test_misshaped_tensor(hf_dir, tmp_path):
  name = "encoder.block.1.layer.1.mlp.router.classifier.weight"
  source = _copy_with(hf_dir, tmp_path,
                      edit_tensors=lambda t: t.update({name: torch.zeros(5, 16)}))
  _assert_fails(source, tmp_path, name, "(5, 16)", "(4, 16)")


def test_unknown_tensor(hf_dir, tmp_path):
  name = "encoder.block.1.layer.1.mlp.extra.weight"
  source = _copy_with(hf_dir, tmp_path,
                      edit_tensors=lambda t: t.update({name: torch.zeros(4, 16)}))
  _assert_fails(source, tmp_path, "no place", name)


def test_router_in_a_dense_block_makes_it_sparse_and_its_dense_ffn_unknown(hf_dir, tmp_path):
  # The tensors decide which blocks are sparse: block 0 with a router is a Switch block, whose
  # dense weights then have no place (and its experts are missing).
  name = "encoder.block.0.layer.1.mlp.router.classifier.weight"
  source = _copy_with(hf_dir, tmp_path,
                      edit_tensors=lambda t: t.update({name: torch.zeros(4, 16)}))
  _assert_fails(source, tmp_path, "no place", "encoder.block.0.layer.1.mlp.wi.weight")


def test_untied_alias_that_differs_is_refused(hf_dir, tmp_path):
  # A tied model whose lm_head is not the embedding: the config and the weights disagree.
  source = _copy_with(hf_dir, tmp_path, edit_tensors=lambda t: t.update(
      {"lm_head.weight": torch.ones_like(t["shared.weight"])}))
  _assert_fails(source, tmp_path, "lm_head.weight", "tie_word_embeddings")


def test_output_dir_that_is_not_empty(hf_dir, tmp_path):
  output = tmp_path / "out"
  output.mkdir()
  (output / "keep.txt").write_text("mine")
  with pytest.raises(ConversionError, match="not empty"):
    from_hf.convert(str(hf_dir), str(output), **QUIET)
  assert os.listdir(output) == ["keep.txt"]


def test_command_line_reports_the_error(tmp_path, capsys):
  assert cli.main(["from-hf", str(tmp_path), "--output_dir", str(tmp_path / "o")]) == 2
  assert "error:" in capsys.readouterr().err and not (tmp_path / "o").exists()


def _checkpoint(directory):
  prefix = str(directory / "model.ckpt-0")
  return {name: tf.train.load_variable(prefix, name) for name, _ in
          tf.train.list_variables(prefix)}


def test_sharded_safetensors_and_pytorch_bin_import_to_the_same_tensors(hf_dir, tmp_path):
  model = type(hf_tiny.switch_model()).from_pretrained(hf_dir)
  model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
  assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
  pickled = tmp_path / "pickled"
  pickled.mkdir()
  torch.save(model.state_dict(), pickled / "pytorch_model.bin")
  (pickled / "config.json").write_text((hf_dir / "config.json").read_text())
  results = []
  for source in (hf_dir, tmp_path / "sharded", pickled):
    out = tmp_path / ("out_" + source.name)
    # A small slice size splits each expert stack over several bundle parts.
    from_hf.convert(str(source), str(out), slice_bytes=3000, **QUIET)
    results.append(_checkpoint(out))
  assert sorted(results[0]) == sorted(results[1]) == sorted(results[2])
  for name, value in results[0].items():
    np.testing.assert_array_equal(results[1][name], value, err_msg=name)
    np.testing.assert_array_equal(results[2][name], value, err_msg=name)
  state = model.state_dict()
  wi = results[0]["encoder/block_000/layer_003/SwitchFFN/wi/kernel"]
  assert wi.shape == (4, 16, 16)
  for e in range(4):
    np.testing.assert_array_equal(
        wi[e], state[f"encoder.block.1.layer.1.mlp.experts.expert_{e}.wi.weight"].numpy().T)
