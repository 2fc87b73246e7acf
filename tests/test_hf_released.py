"""The released models' gin files (gin/models/released/) against their HF config.json values.

Each committed file must be what ``from-hf`` writes for that config, its graph's variables must
be exactly the name table's (so a converted download restores with no variable left
initialised at random), and switch-base-8 must have the ~620M parameters the Hub states.
"""

import os

import pytest

from mtf_switch.convert import names, released
from mtf_switch.convert import spec as spec_lib


@pytest.mark.parametrize("key", sorted(released.RELEASED))
def test_committed_gin_file_is_the_one_the_config_gives(key):
  with open(os.path.join(released.RELEASED_DIR, key + ".gin")) as f:
    assert f.read() == released.released_gin(key)


def test_switch_base_fields_as_the_hub_config_gives_them():
  spec = spec_lib.from_hf_config(released.RELEASED["switch_base_32"])
  assert (spec.d_model, spec.d_ff, spec.d_kv, spec.num_heads) == (768, 3072, 64, 12)
  assert spec.activation == "relu" and not spec.gated and spec.tied_logits
  assert spec.encoder_sparse == spec.decoder_sparse == (False, True) * 6
  assert (spec.num_experts, spec.expert_capacity, spec.vocab_size) == (32, 64, 32128)
  c = spec_lib.from_hf_config(released.RELEASED["switch_c_2048"])
  assert c.num_heads == 30 and c.encoder_sparse == (True,) * 15 and c.activation == "relu"
  t5 = spec_lib.from_hf_config(released.RELEASED["t5_v1_1_base"])
  assert t5.gated and t5.activation == "gelu" and not t5.tied_logits


def test_hf_rule_for_more_sparse_layers_than_layers_gives_none():
  # switch-c-2048's config in PR #6: 12 decoder layers, 15 sparse -> HF builds no sparse one.
  assert spec_lib.hf_sparse_pattern(12, 15) == (False,) * 12


@pytest.mark.parametrize("key", ["switch_base_8", "t5_v1_1_base"])
def test_released_graph_variables_are_the_name_table(key):
  from switch_experiments import table9
  spec = spec_lib.from_hf_config(released.RELEASED[key])
  mtf_graph, _ = table9.build_graph(f"models/released/{key}.gin", inputs_length=8,
                                    targets_length=4)
  built = {v.name: tuple(v.shape.to_integer_list) for v in mtf_graph.all_variables}
  table = {e.mtf_name: e.mtf_shape for e in names.variable_table(spec)}
  assert built == table
  params = sum(int(__import__("numpy").prod(s)) for s in table.values())
  if key == "switch_base_8":
    assert 615e6 < params < 625e6, params  # the issue: "about 620M"


@pytest.mark.parametrize("key", ["switch_base_8", "switch_c_2048", "t5_v1_1_base"])
def test_exported_config_rebuilds_the_same_model_in_transformers(key):
  from transformers import SwitchTransformersConfig, T5Config
  spec = spec_lib.from_hf_config(released.RELEASED[key])
  config = spec_lib.to_hf_config(spec)
  cls = SwitchTransformersConfig if spec.is_switch else T5Config
  rebuilt = cls(**{k: v for k, v in config.items() if k not in ("model_type", "architectures")})
  # transformers 5 rewrites T5's tie_word_embeddings; the spec must survive that.
  assert spec_lib.from_hf_config(rebuilt.to_dict()) == spec


def test_switch_xxl_128_follows_its_tensors_not_its_config_json():
  spec = released.released_spec("switch_xxl_128")
  # 24 + 24 blocks, every odd one sparse (T5X's MIXED layout), as the T5X checkpoint holds.
  assert spec.encoder_sparse == spec.decoder_sparse == (False, True) * 12
  assert spec.gated and spec.activation == "gelu" and not spec.tied_logits
  assert not spec.separate_input_embeddings
  assert (spec.d_model, spec.d_ff, spec.num_heads, spec.d_kv) == (4096, 10240, 64, 64)
  assert (spec.num_experts, spec.expert_capacity, spec.vocab_size) == (128, 64, 32128)
  # config.json alone: HF's exact GELU, refused (from-hf reads it as the tanh GELU only once the
  # tensors prove a T5X-converted gated model: tests/test_hf_switch_xxl_release.py).
  with pytest.raises(spec_lib.ConversionError, match="dense_act_fn activation 'gelu'"):
    spec_lib.from_hf_config(released.SWITCH_XXL_128_CONFIG)
  # ... and with the activation T5X used, the 48 / 12 blocks HF would build from it.
  as_hf_builds = spec_lib.from_hf_config(dict(released.SWITCH_XXL_128_CONFIG,
                                              dense_act_fn="gelu_new"))
  assert as_hf_builds.encoder_sparse == (False, True) * 24
  assert as_hf_builds.decoder_sparse == (False, True) * 6
  # No HF SwitchTransformers config can say "gated".
  with pytest.raises(spec_lib.ConversionError, match="no counterpart in HF"):
    spec_lib.to_hf_config(spec)


def test_switch_xxl_128_builds_at_full_size_with_the_parameters_counted_by_hand():
  """Graph only (no weight allocated): the variables are the name table's, and their sizes add
  up to the count written out from the widths below."""
  from switch_experiments import table9
  spec = released.released_spec("switch_xxl_128")
  mtf_graph, _ = table9.build_graph("models/released/switch_xxl_128.gin", inputs_length=8,
                                    targets_length=4)
  built = {v.name: tuple(v.shape.to_integer_list) for v in mtf_graph.all_variables}
  assert built == {e.mtf_name: e.mtf_shape for e in names.variable_table(spec)}
  assert built["encoder/block_000/layer_003/SwitchFFN/wi_1/kernel"] == (128, 4096, 10240)
  vocab, d, inner, ff, experts, heads, buckets = 32128, 4096, 64 * 64, 10240, 128, 64, 32
  attention = 4 * d * inner                  # q, k, v, o
  geglu = 3 * d * ff                         # wi_0, wi_1, wo
  switch = experts * geglu + d * experts     # the experts and the router
  # Per stack: 24 blocks, 12 dense FFNs and 12 Switch FFNs; the decoder has two attentions per
  # block. One RMS-norm scale per sub-layer plus a final one; one relative bias per stack.
  encoder = 24 * attention + 12 * geglu + 12 * switch + (2 * 24 + 1) * d + heads * buckets
  decoder = 48 * attention + 12 * geglu + 12 * switch + (3 * 24 + 1) * d + heads * buckets
  by_hand = vocab * d + encoder + decoder + d * vocab  # input embedding, separate softmax
  counted = sum(int(__import__("numpy").prod(s)) for s in built.values())
  assert counted == by_hand == 394_675_073_024
