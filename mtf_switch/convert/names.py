"""The one variable-name table between Hugging Face and Mesh-TF checkpoints.

Every tensor of a Switch or T5 v1.1 encoder-decoder is one ``Entry``: its Mesh-TF variable
(name and shape as ``switch_mesh_transformer`` saves it), the HF tensor(s) it is made of,
and how the values are laid out. ``variable_table(spec)`` lists them all; importer and
exporter walk the same list, so a tensor is mapped in one place only.

Naming (HF block i, sub-layer j; p = HF blocks per Mesh-TF block, see gin.py; S = 2
sub-layers per encoder block, 3 per decoder block):

  HF                                                   Mesh-TF
  shared.weight [V, d]                                 shared/embedding [V, d]
  lm_head.weight [V, d] (untied only)                  decoder/logits/kernel [d, V]       T
  {s}.block.i.layer.j.layer_norm.weight [d]            {s}/block_b/layer_l/rms_norm/scale
      with b = i // p, l = (i % p) * S + j
  {s}.block.i.layer.j.{Self,EncDec}Attention.{q,k,v}.weight [h*k, d]
                                                       .../{Self,EncDec}Attention/{q,k,v} [d, h*k] T
  ....o.weight [d, h*k]                                .../o [h*k, d]                      T
  {s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight [buckets, h]
                                                       {s}/block_000/layer_000/SelfAttention/
                                                         relative_attention_bias [h, buckets] T
  dense FFN: Switch model  ...layer.j.mlp.{wi,wo}.weight; T5 ...layer.j.DenseReluDense.
      {wi,wi_0,wi_1,wo}.weight                         .../DenseReluDense/{wi,wi_0,wi_1,wo}/kernel T
  Switch FFN ...layer.j.mlp.router.classifier.weight [E, d]
                                                       .../SwitchFFN/router/kernel [d, E]   T
             ...layer.j.mlp.experts.expert_e.wi.weight [f, d], e < E
                                                       .../SwitchFFN/wi/kernel [E, d, f]  stack of T
             ...expert_e.wo.weight [d, f]              .../SwitchFFN/wo/kernel [E, f, d]  stack of T
  {s}.final_layer_norm.weight                          {s}/rms_norm/scale

HF aliases that are the same tensor as ``shared.weight`` (``{encoder,decoder}.embed_tokens``,
and ``lm_head`` of a tied model) may be present in a checkpoint; they are checked equal to
it, never silently taken for something else. Optimizer slots never appear here.
"""

import dataclasses
from typing import List, Tuple

from mtf_switch.convert.spec import ModelSpec, block_period

SAME, TRANSPOSE, EXPERTS_TRANSPOSE = "same", "transpose", "experts_transpose"
GLOBAL_STEP = "global_step"


@dataclasses.dataclass(frozen=True)
class Entry:
  """One Mesh-TF variable and the HF tensor(s) it is made of.

  Attributes:
    mtf_name: the variable's name in the Mesh-TF checkpoint.
    mtf_shape: its shape there.
    hf_names: one HF tensor name, or one per expert (layout EXPERTS_TRANSPOSE).
    layout: SAME (identical array), TRANSPOSE (2-D, HF is the transpose) or
      EXPERTS_TRANSPOSE (Mesh-TF [E, a, b] = stack over experts of HF's [b, a]).
    group: the tensor group it is written with (one progress line per group).
  """

  mtf_name: str
  mtf_shape: Tuple[int, ...]
  hf_names: Tuple[str, ...]
  layout: str
  group: str

  @property
  def hf_shape(self) -> Tuple[int, ...]:
    """Shape of each HF tensor."""
    if self.layout == SAME:
      return self.mtf_shape
    if self.layout == TRANSPOSE:
      return tuple(reversed(self.mtf_shape))
    return (self.mtf_shape[2], self.mtf_shape[1])


def embedding_aliases(spec: ModelSpec) -> Tuple[str, ...]:
  """HF names that, when present, must hold exactly ``shared.weight``."""
  aliases = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
  return aliases + (("lm_head.weight",) if spec.tied_logits else ())


def _stack_entries(spec: ModelSpec, stack: str) -> List[Entry]:
  sparse = spec.encoder_sparse if stack == "encoder" else spec.decoder_sparse
  period = block_period(sparse)
  per_block = 2 if stack == "encoder" else 3
  d, inner, ff, experts = spec.d_model, spec.num_heads * spec.d_kv, spec.d_ff, spec.num_experts
  entries = []
  for i, is_sparse in enumerate(sparse):
    group = f"{stack} block {i}"

    def mtf_prefix(j, i=i):
      return f"{stack}/block_{i // period:03d}/layer_{(i % period) * per_block + j:03d}"

    def add(mtf_name, mtf_shape, hf_names, layout, group=group):
      entries.append(Entry(mtf_name, tuple(mtf_shape), tuple(hf_names), layout, group))

    attentions = ["SelfAttention"] + (["EncDecAttention"] if stack == "decoder" else [])
    for j, attention in enumerate(attentions):
      hf, mtf = f"{stack}.block.{i}.layer.{j}", mtf_prefix(j)
      add(f"{mtf}/rms_norm/scale", [d], [f"{hf}.layer_norm.weight"], SAME)
      for proj in "qkv":
        add(f"{mtf}/{attention}/{proj}", [d, inner], [f"{hf}.{attention}.{proj}.weight"],
            TRANSPOSE)
      add(f"{mtf}/{attention}/o", [inner, d], [f"{hf}.{attention}.o.weight"], TRANSPOSE)
      if i == 0 and attention == "SelfAttention":
        add(f"{mtf}/SelfAttention/relative_attention_bias",
            [spec.num_heads, spec.relative_attention_num_buckets],
            [f"{hf}.SelfAttention.relative_attention_bias.weight"], TRANSPOSE)
    j = len(attentions)
    hf, mtf = f"{stack}.block.{i}.layer.{j}", mtf_prefix(j)
    add(f"{mtf}/rms_norm/scale", [d], [f"{hf}.layer_norm.weight"], SAME)
    if is_sparse:
      add(f"{mtf}/SwitchFFN/router/kernel", [d, experts], [f"{hf}.mlp.router.classifier.weight"],
          TRANSPOSE)
      for name, shape in (("wi", [experts, d, ff]), ("wo", [experts, ff, d])):
        add(f"{mtf}/SwitchFFN/{name}/kernel", shape,
            [f"{hf}.mlp.experts.expert_{e}.{name}.weight" for e in range(experts)],
            EXPERTS_TRANSPOSE)
      continue
    module = "mlp" if spec.is_switch else "DenseReluDense"
    for name in (["wi_0", "wi_1"] if spec.gated else ["wi"]):
      add(f"{mtf}/DenseReluDense/{name}/kernel", [d, ff], [f"{hf}.{module}.{name}.weight"],
          TRANSPOSE)
    add(f"{mtf}/DenseReluDense/wo/kernel", [ff, d], [f"{hf}.{module}.wo.weight"], TRANSPOSE)
  entries.append(Entry(f"{stack}/rms_norm/scale", (d,), (f"{stack}.final_layer_norm.weight",),
                       SAME, f"{stack} final norm"))
  return entries


def variable_table(spec: ModelSpec) -> List[Entry]:
  """Every model variable, in checkpoint-writing order (embeddings, encoder, decoder)."""
  entries = [Entry("shared/embedding", (spec.vocab_size, spec.d_model), ("shared.weight",),
                   SAME, "embeddings")]
  entries += _stack_entries(spec, "encoder")
  entries += _stack_entries(spec, "decoder")
  if not spec.tied_logits:
    entries.append(Entry("decoder/logits/kernel", (spec.d_model, spec.vocab_size),
                         ("lm_head.weight",), TRANSPOSE, "logits"))
  return entries
