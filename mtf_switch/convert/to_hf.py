"""This project's Mesh-TF checkpoint -> a Hugging Face model directory (``from_pretrained``).

    python -m mtf_switch.convert to-hf --checkpoint RUN/model.ckpt-N \\
        --gin_file models/switch_tiny.gin --output_dir HF_OUT

The model is described by the gin files it was trained with: they are parsed as the CLI does
and the layer stacks of ``make_bitransformer`` are read (no graph is run) into a ModelSpec;
any layer or setting HF's SwitchTransformers/T5 cannot express is an error naming it. The
checkpoint must then hold exactly the variables of ``names.variable_table`` (optimizer slots,
``*_slot_*``, and ``global_step`` are left out). Tensors are read one at a time and written
as safetensors shards; config.json and, when there is one, spiece.model complete the
directory, built in a temporary sibling and renamed at the end.

HF's Switch routes each sequence with an absolute capacity; a model trained with capacity
factors needs ``--expert_capacity`` (its gin's ``fixed_expert_capacity`` otherwise).
"""

import json
import os
import re
import shutil
from typing import Optional, Sequence

import numpy as np

from mtf_switch.convert import names as names_lib
from mtf_switch.convert.hf_files import (
    SPIECE,
    check_output_dir,
    save_safetensors_shards,
    staged_output_dir,
)
from mtf_switch.convert.spec import (
  SWITCH_MODEL_TYPE,
  T5_MODEL_TYPE,
  ConversionError,
  ModelSpec,
  to_hf_config,
)

SLOT_PATTERN = re.compile(r"_slot_[a-z]+$")
# Untied Switch models: the HF input embeddings written as copies of a Mesh-TF one.
SWITCH_INPUT_COPIES = {
    "shared.weight": ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"),
    "encoder.embed_tokens.weight": ("shared.weight",)}


def resolve_checkpoint(path: str) -> str:
  import tensorflow.compat.v1 as tf
  if os.path.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise ConversionError(f"{path}: no checkpoint in this directory")
    return latest
  if not os.path.exists(path + ".index"):
    raise ConversionError(f"{path}: no such checkpoint ({path}.index missing)")
  return path


def _activation(value, where: str):
  """(mesh-tf activation, gated) of a DenseReluDense / SwitchFFN activation setting."""
  if isinstance(value, (list, tuple)):
    if len(value) == 2 and value[1] == "linear" and value[0] in ("relu", "gelu"):
      return value[0], True
    raise ConversionError(f"{where}: activation {value!r} has no HF counterpart")
  if value in ("relu", "gelu"):
    return value, False
  if value == "geglu":
    return "gelu", True
  raise ConversionError(f"{where}: activation {value!r} has no HF counterpart")


def _hf_vocab_size(gin, rows: int) -> int:
  """The HF vocabulary: ``mtf_switch.hf_vocab.size`` when the gin binds it (an imported
  model whose vocabulary Mesh-TF pads), else the checkpoint's rows."""
  try:
    size = gin.query_parameter("mtf_switch.hf_vocab.size")
  except ValueError:
    return rows
  if size is None:
    return rows
  if not 0 < size <= rows:
    raise ConversionError(f"mtf_switch.hf_vocab.size={size} does not fit the checkpoint's "
                          f"{rows} vocabulary rows")
  return int(size)


def _built_model(gin_files: Sequence[str], gin_params: Sequence[str], vocab_size: int):
  """The Bitransformer the gin files build (parsed as the CLI does; no graph is run)."""
  import tensorflow.compat.v1 as tf
  from mesh_tensorflow.transformer import transformer

  import gin
  from mtf_switch.gin_files import parse_gin
  parse_gin(gin_files, gin_params)
  with tf.Graph().as_default(), gin.config_scope(""):
    model = transformer.make_bitransformer(input_vocab_size=vocab_size,
                                           output_vocab_size=vocab_size, layout="", mesh_shape="")
  if not isinstance(model, transformer.Bitransformer):
    raise ConversionError(f"{type(model).__name__}: only encoder-decoder models export")
  if not model.shared_embedding and model.decoder.shared_embedding_and_softmax_weights:
    raise ConversionError("Bitransformer.shared_embedding=False with a tied softmax has no HF "
                          "counterpart (HF ties the input embeddings to the tied softmax)")
  return model


def _read_attention(layer, position: int, where: str, found: dict) -> None:
  """Checks a block's attention layer (position 0: self-attention) and records its settings
  in found["attention"]: (heads, key size, relative buckets of the self-attention)."""
  if not layer.fold_scaling_into_initializer:
    raise ConversionError(f"{where}: fold_scaling_into_initializer=False has no HF twin")
  if layer.num_memory_heads or layer.shared_kv:
    raise ConversionError(f"{where}: multi-query / shared k-v attention has no HF twin")
  rel = layer.relative_attention_type
  if position == 0 and rel != "bias_shared":
    raise ConversionError(f"{where}: relative_attention_type={rel!r}; HF's is one "
                          f"bias per stack ('bias_shared')")
  found["attention"].add((layer.num_heads, layer.key_value_size,
                          layer.relative_attention_num_buckets if position == 0 else None))


def _read_ffn(layer, where: str, found: dict, expert_capacity: Optional[int]) -> bool:
  """Checks a block's FFN and records its settings in found["ffn"] (and found["switch"]);
  True for a Switch layer."""
  from mesh_tensorflow.transformer import transformer_layers

  from mtf_switch import layers, routing
  if type(layer) is transformer_layers.DenseReluDense:
    if layer.use_bias:
      raise ConversionError(f"{where}: use_bias=True has no HF counterpart")
    found["ffn"].add((layer.hidden_size,) + _activation(layer.activation, where))
    return False
  if type(layer) is layers.SwitchFFN:
    router = layer.router
    if type(router) is not routing.SwitchRouter:
      raise ConversionError(f"{where}: router {type(router).__name__} has no HF counterpart "
                            f"(HF routes top-1, as SwitchRouter does)")
    if router.num_overflow_choices:
      raise ConversionError(f"{where}: No-Token-Left-Behind has no HF counterpart")
    capacity = expert_capacity or layer.fixed_expert_capacity
    if capacity is None:
      raise ConversionError(
          f"{where}: HF needs an absolute expert capacity per sequence; set "
          f"mtf_switch.SwitchFFN.fixed_expert_capacity or pass --expert_capacity")
    found["switch"].add((layer.num_experts, capacity, router.jitter_eps,
                         layer.load_balance_loss_coef, layer.z_loss_coef))
    found["ffn"].add((layer.hidden_size,) + _activation(layer.activation, where))
    return True
  raise ConversionError(f"{where}: this layer has no HF counterpart")


def _read_stack(stack_name: str, stack, found: dict, expert_capacity: Optional[int]) -> tuple:
  """A stack's sparse pattern (True per Switch FFN), its blocks (attention..., FFN) checked."""
  from mesh_tensorflow.transformer import transformer_layers
  if stack.positional_embedding:
    raise ConversionError(f"{stack_name}: absolute positional embeddings have no HF "
                          f"counterpart (T5 uses relative attention only)")
  kinds = ([transformer_layers.SelfAttention] if stack_name == "encoder" else
           [transformer_layers.SelfAttention, transformer_layers.EncDecAttention])
  per_block = len(kinds) + 1
  stack_layers = stack.layer_stack.layers
  if len(stack_layers) % per_block:
    raise ConversionError(f"{stack_name}: {len(stack_layers)} layers are not blocks of "
                          f"{per_block} (attention..., FFN)")
  pattern = []
  for i, layer in enumerate(stack_layers):
    where = f"{stack_name} layer {i} ({type(layer).__name__})"
    position = i % per_block
    if position < len(kinds):
      if type(layer) is not kinds[position]:
        raise ConversionError(f"{where}: expected {kinds[position].__name__}")
      _read_attention(layer, position, where, found)
    else:
      pattern.append(_read_ffn(layer, where, found, expert_capacity))
  return tuple(pattern)


def _one_setting_each(found: dict):
  """(d_ff, activation, gated, num_heads, d_kv, buckets): HF has one of each for every layer."""
  for key in ("ffn", "attention", "switch"):
    values = found[key]
    if key == "attention":
      values = {v[:2] for v in values}
    if len(values) > 1:
      raise ConversionError(f"HF has one setting for every layer; the {key} layers differ: "
                            f"{sorted(values)}")
  (d_ff, activation, gated), = found["ffn"]
  (num_heads, d_kv), = {v[:2] for v in found["attention"]}
  buckets = {v[2] for v in found["attention"] if v[2] is not None}
  if len(buckets) != 1:
    raise ConversionError(f"relative attention buckets differ between stacks: {buckets}")
  return d_ff, activation, gated, num_heads, d_kv, buckets.pop()


def spec_from_gin(gin_files: Sequence[str], gin_params: Sequence[str], vocab_size: int,
                  expert_capacity: Optional[int] = None) -> ModelSpec:
  """Reads the model the gin files build; raises ConversionError for what HF lacks.

  The steps: build the model (``_built_model``), read each stack block by block
  (``_read_stack``: attention and FFN layers checked, their settings collected), check that
  every layer has the same settings (``_one_setting_each``), then the ModelSpec.
  """
  import gin
  model = _built_model(gin_files, gin_params, vocab_size)
  found = {"ffn": set(), "attention": set(), "switch": set()}
  sparse = {stack_name: _read_stack(stack_name, stack, found, expert_capacity)
            for stack_name, stack in (("encoder", model.encoder), ("decoder", model.decoder))}
  d_ff, activation, gated, num_heads, d_kv, buckets = _one_setting_each(found)
  is_switch = bool(found["switch"])
  if is_switch and gated:
    raise ConversionError("gated (GEGLU) FFNs have no counterpart in HF's SwitchTransformers")
  try:
    epsilon = gin.query_parameter("transformer.sublayer_rms_norm.epsilon")
  except ValueError:
    epsilon = 1e-6
  common = dict(vocab_size=_hf_vocab_size(gin, vocab_size),
                d_model=model.encoder.model_dim.size, d_kv=d_kv, d_ff=d_ff, num_heads=num_heads,
                encoder_sparse=sparse["encoder"], decoder_sparse=sparse["decoder"],
                activation=activation, gated=gated,
                tied_logits=bool(model.decoder.shared_embedding_and_softmax_weights),
                separate_input_embeddings=not model.shared_embedding,
                layer_norm_epsilon=float(epsilon),
                relative_attention_num_buckets=buckets)
  if not is_switch:
    return ModelSpec(model_type=T5_MODEL_TYPE, **common)
  (experts, capacity, jitter, aux, z), = found["switch"]
  return ModelSpec(model_type=SWITCH_MODEL_TYPE, num_experts=experts,
                   expert_capacity=capacity, router_jitter_noise=jitter,
                   router_aux_loss_coef=aux, router_z_loss_coef=z, **common)


def convert(checkpoint: str, gin_files: Sequence[str], gin_params: Sequence[str],
            output_dir: str, spiece_model: Optional[str] = None,
            expert_capacity: Optional[int] = None) -> ModelSpec:
  import tensorflow.compat.v1 as tf
  check_output_dir(output_dir)
  checkpoint = resolve_checkpoint(checkpoint)
  shapes = dict(tf.train.list_variables(checkpoint))
  embedding = next((n for n in ("shared/embedding", "encoder/embedding") if n in shapes), None)
  if embedding is None:
    raise ConversionError(f"{checkpoint}: no 'shared/embedding' or 'encoder/embedding' "
                          f"variable")
  spec = spec_from_gin(gin_files, gin_params, shapes[embedding][0], expert_capacity)
  table = names_lib.variable_table(spec)
  model_vars = {n for n in shapes if n != names_lib.GLOBAL_STEP and not SLOT_PATTERN.search(n)}
  expected = {e.mtf_name: e for e in table}
  unknown = sorted(model_vars - set(expected))
  if unknown:
    raise ConversionError(f"{checkpoint}: variables the gin's model has no place for: "
                          f"{unknown[:5]}")
  missing = sorted(set(expected) - model_vars)
  if missing:
    raise ConversionError(f"{checkpoint}: variables missing: {missing[:5]}")
  for name, entry in expected.items():
    if tuple(shapes[name]) != entry.mtf_shape:
      raise ConversionError(f"{checkpoint}: variable {name!r} has shape {tuple(shapes[name])}, "
                            f"the gin's model needs {entry.mtf_shape}")
  if spiece_model is None:
    beside = os.path.join(os.path.dirname(checkpoint), SPIECE)
    spiece_model = beside if os.path.exists(beside) else None
  elif not os.path.exists(spiece_model):
    raise ConversionError(f"--spiece_model {spiece_model}: no such file")

  reader = tf.train.load_checkpoint(checkpoint)

  def tensors():
    for entry in table:
      # Mesh-TF saves bfloat16 masters by default; HF reads float32 (an exact widening).
      value = reader.get_tensor(entry.mtf_name).astype(np.float32)
      for hf_name, hf_value in names_lib.to_hf_values(entry, value):
        yield hf_name, hf_value
        if spec.is_switch and not spec.tied_logits and hf_name in SWITCH_INPUT_COPIES:
          # transformers 5.24 unties the input embeddings from `shared` too when
          # tie_word_embeddings is False, re-initialising any that is absent: every one of
          # the three is written (`shared` unused by HF then, a copy of the encoder's).
          for copy in SWITCH_INPUT_COPIES[hf_name]:
            yield copy, hf_value

  with staged_output_dir(output_dir, prefix=".export-") as work:
    save_safetensors_shards(tensors(), work)
    with open(os.path.join(work, "config.json"), "w") as f:
      json.dump(to_hf_config(spec), f, indent=2, sort_keys=True)
    if spiece_model:
      shutil.copyfile(spiece_model, os.path.join(work, SPIECE))
  return spec
