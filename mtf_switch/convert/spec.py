"""What a Switch or T5 v1.1 encoder-decoder is, in one small record, read from an HF config.

``ModelSpec`` is the meeting point of the two worlds: ``from_hf_config`` reads a Hugging Face
``config.json`` (``SwitchTransformersConfig`` or ``T5Config``) and refuses, naming the field,
whatever this project's Mesh-TF model cannot express; ``to_hf_config`` writes it back;
``gin.py`` turns it into the gin file of that exact model; ``names.py`` into the variable
table.

Semantics that must agree for logit parity (checked by tests/test_hf_parity.py):
* T5-style RMS norm without mean or bias, epsilon from ``layer_norm_epsilon``;
* relative attention buckets: Mesh-TF's bucket function has max_distance fixed at 128, so
  any other ``relative_attention_max_distance`` is refused;
* no 1/sqrt(d_kv) in attention (both fold it into the initialisation);
* tied logits: both multiply the decoder output by d_model**-0.5 before the shared embedding;
  untied: neither scales;
* HF's "gelu_new" / "gelu_pytorch_tanh" is Mesh-TF's tanh GELU; HF's exact "gelu" has no
  Mesh-TF twin and is refused;
* Switch routing: HF routes each sequence as one group with an absolute ``expert_capacity``,
  tokens in position order, the over-capacity token's FFN output zero (it keeps its residual)
  - the project's layer with group_size = sequence length and fixed_expert_capacity.
"""

import dataclasses
import json
import os
from typing import Dict, Optional, Tuple


class ConversionError(ValueError):
  """A model, file or tensor the conversion cannot handle; the message names it."""


# HF activation name -> Mesh-TF activation name (mtf.gelu is the tanh approximation).
HF_TO_MTF_ACTIVATION = {"relu": "relu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu"}
MTF_TO_HF_ACTIVATION = {"relu": "relu", "gelu": "gelu_new"}
MTF_MAX_DISTANCE = 128
# Unitransformer.vocab_divisor's default: Mesh-TF rounds every vocabulary up to a multiple.
MTF_VOCAB_DIVISOR = 128
SWITCH_MODEL_TYPE = "switch_transformers"
T5_MODEL_TYPE = "t5"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """An encoder-decoder as both frameworks see it.

  Attributes:
    model_type: "switch_transformers" or "t5".
    vocab_size: rows of the embedding (HF's vocab_size; Mesh-TF pads to a multiple of 128).
    d_model, d_kv, d_ff, num_heads: sizes; inner attention size = num_heads * d_kv.
    encoder_sparse, decoder_sparse: per HF block, whether its FFN is a Switch layer.
    num_experts, expert_capacity: the Switch layers' (0 for T5).
    activation: Mesh-TF activation of every FFN ("relu" or "gelu").
    gated: FFN is act(x wi_0) * (x wi_1) (T5 v1.1's gated-gelu). In a Switch model it holds
      for the dense FFNs and the experts alike (switch-xxl-128's GEGLU, released.py); HF's
      SwitchTransformers has no gated FFN, so such a model has no HF config to go to.
    tied_logits: logits = (d_model**-0.5 * x) @ embedding.T (else a separate lm_head).
    separate_input_embeddings: the encoder and the decoder read their own input embedding
      (HF's encoder/decoder.embed_tokens of an untied Switch model; Mesh-TF's
      ``Bitransformer.shared_embedding = False``); else both read ``shared``.
    layer_norm_epsilon, relative_attention_num_buckets: as in the HF config.
    router_jitter_noise, router_z_loss_coef, router_aux_loss_coef: HF's training settings,
      kept so that an export writes them back and the gin file can state them.
  """

  model_type: str
  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_heads: int
  encoder_sparse: Tuple[bool, ...]
  decoder_sparse: Tuple[bool, ...]
  num_experts: int = 0
  expert_capacity: int = 0
  activation: str = "relu"
  gated: bool = False
  tied_logits: bool = True
  separate_input_embeddings: bool = False
  layer_norm_epsilon: float = 1e-6
  relative_attention_num_buckets: int = 32
  router_jitter_noise: float = 0.01
  router_z_loss_coef: float = 0.001
  router_aux_loss_coef: float = 0.001

  @property
  def num_layers(self) -> int:
    return len(self.encoder_sparse)

  @property
  def num_decoder_layers(self) -> int:
    return len(self.decoder_sparse)

  @property
  def is_switch(self) -> bool:
    return self.model_type == SWITCH_MODEL_TYPE

  @property
  def mtf_vocab_size(self) -> int:
    """Mesh-TF's vocabulary dimension: vocab_size rounded up to MTF_VOCAB_DIVISOR (the rows
    beyond vocab_size are zero on import, and masked out of the logits, see vocab_mask.py)."""
    return -(-self.vocab_size // MTF_VOCAB_DIVISOR) * MTF_VOCAB_DIVISOR

  @property
  def vocab_is_padded(self) -> bool:
    return self.mtf_vocab_size != self.vocab_size


def _require(config: Dict, key: str, where: str):
  if key not in config:
    raise ConversionError(f"{where}: config.json has no '{key}'")
  return config[key]


def hf_sparse_pattern(num_layers: int, num_sparse: int,
                      stored_step: Optional[int] = None) -> Tuple[bool, ...]:
  """HF's rule (SwitchTransformersConfig, SwitchTransformersStack): step = layers // sparse
  (= layers when sparse is 0), unless the config stores its own ``*_sparse_step``, which then
  overrides it; block i is sparse iff step > 0 and (i % step == 1 or step == 1)."""
  if stored_step is not None:
    step = int(stored_step)
  else:
    step = num_layers // num_sparse if num_sparse > 0 else num_layers
  # More sparse layers than layers gives step 0, which HF builds as no sparse layer at all.
  return tuple(step > 0 and (i % step == 1 or step == 1) for i in range(num_layers))


def from_hf_config(config: Dict, where: str = "config.json") -> ModelSpec:
  """Reads an HF config dict; raises ConversionError naming any field the project lacks."""
  model_type = _require(config, "model_type", where)
  if model_type not in (SWITCH_MODEL_TYPE, T5_MODEL_TYPE):
    raise ConversionError(f"{where}: model_type={model_type!r} is not supported; expected "
                          f"'{SWITCH_MODEL_TYPE}' or '{T5_MODEL_TYPE}'")
  if not config.get("is_encoder_decoder", True):
    raise ConversionError(f"{where}: is_encoder_decoder=False (decoder-only) is not supported")
  num_layers = int(_require(config, "num_layers", where))
  num_decoder_layers = config.get("num_decoder_layers")
  num_decoder_layers = num_layers if num_decoder_layers is None else int(num_decoder_layers)
  distance = int(config.get("relative_attention_max_distance", 128))
  if distance != MTF_MAX_DISTANCE:
    raise ConversionError(
        f"{where}: relative_attention_max_distance={distance} is not supported: Mesh-TF's "
        f"relative-position buckets have max_distance fixed at {MTF_MAX_DISTANCE}")
  common = dict(
      model_type=model_type,
      vocab_size=int(_require(config, "vocab_size", where)),
      d_model=int(_require(config, "d_model", where)),
      d_kv=int(_require(config, "d_kv", where)),
      d_ff=int(_require(config, "d_ff", where)),
      num_heads=int(_require(config, "num_heads", where)),
      layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-6)),
      relative_attention_num_buckets=int(config.get("relative_attention_num_buckets", 32)))
  if model_type == T5_MODEL_TYPE:
    proj = config.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    hf_act = proj[len("gated-"):] if gated else proj
    if proj == "gated-gelu":  # HF maps T5 v1.1's "gated-gelu" to the tanh GELU
      hf_act = "gelu_new"
    # transformers >= 5 forces tie_word_embeddings=True in T5Config and records the real
    # choice (scale the decoder output or not) as scale_decoder_outputs; older configs have
    # tie_word_embeddings=False for v1.1. An untied-but-unscaled model whose lm_head equals
    # the embedding is imported as untied (a copy of the embedding as the softmax).
    if "scale_decoder_outputs" in config:
      tied = bool(config["scale_decoder_outputs"])
    else:
      tied = bool(config.get("tie_word_embeddings", True))
    return ModelSpec(**common, encoder_sparse=(False,) * num_layers,
                     decoder_sparse=(False,) * num_decoder_layers,
                     activation=_activation(hf_act, where, "feed_forward_proj"), gated=gated,
                     tied_logits=tied)
  act = config.get("dense_act_fn", "relu")
  if config.get("router_bias", False):
    raise ConversionError(f"{where}: router_bias=True is not supported (the project's router "
                          f"has no bias)")
  router_dtype = config.get("router_dtype", "float32")
  if router_dtype != "float32":
    raise ConversionError(f"{where}: router_dtype={router_dtype!r} is not supported (the "
                          f"project's router is float32; bfloat16 only as an ablation)")
  if config.get("router_ignore_padding_tokens", False):
    # HF 5.24 reads this flag but does not use it; the project always ignores padding.
    pass
  return ModelSpec(
      **common,
      encoder_sparse=hf_sparse_pattern(num_layers,
                                       int(config.get("num_sparse_encoder_layers", 3)),
                                       config.get("encoder_sparse_step")),
      decoder_sparse=hf_sparse_pattern(num_decoder_layers,
                                       int(config.get("num_sparse_decoder_layers", 3)),
                                       config.get("decoder_sparse_step")),
      num_experts=int(_require(config, "num_experts", where)),
      expert_capacity=int(_require(config, "expert_capacity", where)),
      activation=_activation(act, where, "dense_act_fn"),
      tied_logits=bool(config.get("tie_word_embeddings", True)),
      router_jitter_noise=float(config.get("router_jitter_noise", 0.01)),
      router_z_loss_coef=float(config.get("router_z_loss_coef", 0.001)),
      router_aux_loss_coef=float(config.get("router_aux_loss_coef", 0.001)))


def _activation(hf_act: str, where: str, field: str) -> str:
  if hf_act not in HF_TO_MTF_ACTIVATION:
    raise ConversionError(
        f"{where}: {field} activation {hf_act!r} is not supported; Mesh-TF has "
        f"{sorted(HF_TO_MTF_ACTIVATION)} (HF's exact 'gelu' has no Mesh-TF twin: mtf.gelu is "
        f"the tanh approximation, HF's 'gelu_new')")
  return HF_TO_MTF_ACTIVATION[hf_act]


def read_hf_config(model_dir: str) -> Dict:
  path = os.path.join(model_dir, "config.json")
  if not os.path.isdir(model_dir):
    raise ConversionError(f"{model_dir}: not a directory")
  if not os.path.exists(path):
    raise ConversionError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
  with open(path) as f:
    return json.load(f)


def hf_sparse_step(pattern: Tuple[bool, ...], stack: str) -> int:
  """The ``*_sparse_step`` whose HF rule gives exactly ``pattern`` (0: no sparse block; note
  that HF's own "no sparse layer" setting, num_sparse = 0, gives step = layers and so makes
  block 1 sparse)."""
  for step in range(len(pattern) + 1):
    if hf_sparse_pattern(len(pattern), 0, stored_step=step) == pattern:
      return step
  raise ConversionError(
      f"{stack} sparse layers at {[i for i, s in enumerate(pattern) if s]} cannot be written "
      f"as an HF config (HF puts them at i % step == 1)")


def to_hf_config(spec: ModelSpec) -> Dict:
  """The config.json HF's from_pretrained rebuilds this model from (transformers 5.24)."""
  common = dict(
      vocab_size=spec.vocab_size, d_model=spec.d_model, d_kv=spec.d_kv, d_ff=spec.d_ff,
      num_layers=spec.num_layers, num_decoder_layers=spec.num_decoder_layers,
      num_heads=spec.num_heads, relative_attention_num_buckets=spec.relative_attention_num_buckets,
      relative_attention_max_distance=MTF_MAX_DISTANCE, dropout_rate=0.1,
      layer_norm_epsilon=spec.layer_norm_epsilon, initializer_factor=1.0,
      is_encoder_decoder=True, use_cache=True, pad_token_id=0, eos_token_id=1,
      decoder_start_token_id=0, tie_word_embeddings=spec.tied_logits)
  if spec.separate_input_embeddings and (spec.tied_logits or not spec.is_switch):
    raise ConversionError("separate encoder/decoder input embeddings have an HF counterpart "
                          "only in an untied Switch model (HF ties both embed_tokens to shared "
                          "when it ties the softmax, and in every T5 model)")
  if spec.is_switch and spec.gated:
    raise ConversionError("gated FFNs (e.g. switch-xxl-128's GEGLU) have no counterpart in HF's "
                          "SwitchTransformers (one wi per FFN, no wi_0/wi_1)")
  if spec.model_type == T5_MODEL_TYPE:
    act = MTF_TO_HF_ACTIVATION[spec.activation]
    proj = ("gated-gelu" if act == "gelu_new" else f"gated-{act}") if spec.gated else act
    if not spec.gated and act == "gelu_new":
      proj = "gelu_new"
    return dict(common, model_type=T5_MODEL_TYPE, architectures=["T5ForConditionalGeneration"],
                feed_forward_proj=proj)
  return dict(
      common, model_type=SWITCH_MODEL_TYPE,
      architectures=["SwitchTransformersForConditionalGeneration"],
      num_experts=spec.num_experts, expert_capacity=spec.expert_capacity,
      # The stored steps decide the layout in transformers (they override the step it derives
      # from num_sparse_*_layers); the counts are written for the reader.
      num_sparse_encoder_layers=sum(spec.encoder_sparse),
      num_sparse_decoder_layers=sum(spec.decoder_sparse),
      encoder_sparse_step=hf_sparse_step(spec.encoder_sparse, "encoder"),
      decoder_sparse_step=hf_sparse_step(spec.decoder_sparse, "decoder"),
      dense_act_fn=MTF_TO_HF_ACTIVATION[spec.activation], router_bias=False,
      router_dtype="float32", router_jitter_noise=spec.router_jitter_noise,
      router_z_loss_coef=spec.router_z_loss_coef,
      router_aux_loss_coef=spec.router_aux_loss_coef, router_ignore_padding_tokens=False)


def block_period(pattern: Tuple[bool, ...]) -> int:
  """The smallest p dividing len(pattern) with pattern[i] == pattern[i % p]: HF blocks per
  Mesh-TF block, so that the gin file lists one period and repeats it."""
  n = len(pattern)
  for p in range(1, n + 1):
    if n % p == 0 and all(pattern[i] == pattern[i % p] for i in range(n)):
      return p
  return n


