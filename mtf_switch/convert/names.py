"""The one variable-name table between Hugging Face and Mesh-TF checkpoints.

Every tensor of a Switch or T5 v1.1 encoder-decoder is one ``Entry``: its Mesh-TF variable
(name and shape as ``switch_mesh_transformer`` saves it), the HF tensor(s) it is made of,
and how the values are laid out. ``variable_table(spec)`` lists them all; importer and
exporter walk the same list, so a tensor is mapped in one place only.

Naming (HF block i, sub-layer j; p = HF blocks per Mesh-TF block, see gin.py; S = 2
sub-layers per encoder block, 3 per decoder block):

  HF                                                   Mesh-TF (P = V rounded up to x128)
  shared.weight [V, d]                                 shared/embedding [P, d]            R
  {encoder,decoder}.embed_tokens.weight [V, d]         {encoder,decoder}/embedding [P, d] R
      (instead of shared/embedding, when the spec has separate input embeddings)
  lm_head.weight [V, d] (untied only)                  decoder/logits/kernel [d, P]       C
      (T5X-converted files, switch-xxl-128, name it decoder.lm_head.weight: structure.py)
  {s}.block.i.layer.j.layer_norm.weight [d]            {s}/block_b/layer_l/rms_norm/scale
      with b = i // p, l = (i % p) * S + j
  R: HF's rows then P - V zero rows; C: the transpose, then P - V zero columns (Mesh-TF pads
  every vocabulary dimension; the export drops the padding again).
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
             (gated experts: wi_0 and wi_1 in place of wi, the names switch-xxl-128's files use)
             ...expert_e.wo.weight [d, f]              .../SwitchFFN/wo/kernel [E, f, d]  stack of T
  {s}.final_layer_norm.weight                          {s}/rms_norm/scale

HF aliases that are the same tensor as ``shared.weight`` (``{encoder,decoder}.embed_tokens``
when the inputs share it, and ``lm_head`` of a tied model) may be present in a checkpoint;
they are checked equal to it, never silently taken for something else. With separate input
embeddings HF does not use ``shared.weight``: the import skips it and the export writes a copy
of the encoder's embedding there. Optimizer slots never appear here.
"""

import dataclasses
from typing import Iterator, List, Tuple

import numpy as np

from mtf_switch.convert.spec import ModelSpec, block_period

SAME, TRANSPOSE, EXPERTS_TRANSPOSE = "same", "transpose", "experts_transpose"
# The vocabulary tensors: HF [V, d] -> Mesh-TF [P, d] (rows padded) or [d, P] (transposed,
# columns padded), P = the spec's mtf_vocab_size.
VOCAB_ROWS, VOCAB_COLUMNS = "vocab_rows", "vocab_columns"
GLOBAL_STEP = "global_step"


@dataclasses.dataclass(frozen=True)
class Entry:
  """One Mesh-TF variable and the HF tensor(s) it is made of.

  Attributes:
    mtf_name: the variable's name in the Mesh-TF checkpoint.
    mtf_shape: its shape there.
    hf_names: one HF tensor name, or one per expert (layout EXPERTS_TRANSPOSE).
    layout: SAME (identical array), TRANSPOSE (2-D, HF is the transpose) or
      EXPERTS_TRANSPOSE (Mesh-TF [E, a, b] = stack over experts of HF's [b, a]), VOCAB_ROWS
      or VOCAB_COLUMNS (see above).
    group: the tensor group it is written with (one progress line per group).
    hf_vocab: HF's vocabulary size V (the VOCAB_* layouts only).
  """

  mtf_name: str
  mtf_shape: Tuple[int, ...]
  hf_names: Tuple[str, ...]
  layout: str
  group: str
  hf_vocab: int = 0

  @property
  def hf_shape(self) -> Tuple[int, ...]:
    """Shape of each HF tensor."""
    if self.layout == VOCAB_ROWS:
      return (self.hf_vocab, self.mtf_shape[1])
    if self.layout == VOCAB_COLUMNS:
      return (self.hf_vocab, self.mtf_shape[0])
    if self.layout == SAME:
      return self.mtf_shape
    if self.layout == TRANSPOSE:
      return tuple(reversed(self.mtf_shape))
    return (self.mtf_shape[2], self.mtf_shape[1])


def embedding_aliases(spec: ModelSpec) -> Tuple[str, ...]:
  """HF names that, when present, must hold exactly ``shared.weight``."""
  aliases = () if spec.separate_input_embeddings else (
      "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
  return aliases + (("lm_head.weight",) if spec.tied_logits else ())


def unused_hf_names(spec: ModelSpec) -> Tuple[str, ...]:
  """HF tensors a checkpoint may hold that this model does not read."""
  return ("shared.weight",) if spec.separate_input_embeddings else ()


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
      wi_names = ["wi_0", "wi_1"] if spec.gated else ["wi"]
      for name, shape in [(n, [experts, d, ff]) for n in wi_names] + [("wo", [experts, ff, d])]:
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


def embedding_entries(spec: ModelSpec) -> List[Entry]:
  """The input embedding(s): one shared table, or the encoder's and the decoder's."""
  shape, vocab = (spec.mtf_vocab_size, spec.d_model), spec.vocab_size
  if not spec.separate_input_embeddings:
    return [Entry("shared/embedding", shape, ("shared.weight",), VOCAB_ROWS, "embeddings",
                  vocab)]
  return [Entry(f"{stack}/embedding", shape, (f"{stack}.embed_tokens.weight",), VOCAB_ROWS,
                "embeddings", vocab) for stack in ("encoder", "decoder")]


def variable_table(spec: ModelSpec) -> List[Entry]:
  """Every model variable, in checkpoint-writing order (embeddings, encoder, decoder)."""
  entries = embedding_entries(spec)
  entries += _stack_entries(spec, "encoder")
  entries += _stack_entries(spec, "decoder")
  if not spec.tied_logits:
    entries.append(Entry("decoder/logits/kernel", (spec.d_model, spec.mtf_vocab_size),
                         ("lm_head.weight",), VOCAB_COLUMNS, "logits", spec.vocab_size))
  return entries


def to_mtf_value(entry: Entry, arrays: List[np.ndarray]) -> np.ndarray:
  """The Mesh-TF value of ``entry`` from its HF tensors (in ``entry.hf_names`` order; for an
  expert stack, any consecutive run of them)."""
  if entry.layout == SAME:
    return arrays[0]
  if entry.layout == TRANSPOSE:
    return np.ascontiguousarray(arrays[0].T)
  if entry.layout == EXPERTS_TRANSPOSE:
    return np.stack([a.T for a in arrays])
  padded = np.zeros((entry.mtf_shape[0] if entry.layout == VOCAB_ROWS else entry.mtf_shape[1],
                     arrays[0].shape[1]), dtype=arrays[0].dtype)
  padded[:entry.hf_vocab] = arrays[0]
  return padded if entry.layout == VOCAB_ROWS else np.ascontiguousarray(padded.T)


def to_hf_values(entry: Entry, value: np.ndarray) -> Iterator[Tuple[str, np.ndarray]]:
  """(HF name, HF tensor) pairs of a Mesh-TF value; the vocabulary padding is dropped."""
  if entry.layout == SAME:
    yield entry.hf_names[0], value
  elif entry.layout == TRANSPOSE:
    yield entry.hf_names[0], value.T
  elif entry.layout == VOCAB_ROWS:
    yield entry.hf_names[0], value[:entry.hf_vocab]
  elif entry.layout == VOCAB_COLUMNS:
    yield entry.hf_names[0], value[:, :entry.hf_vocab].T
  else:
    for expert, hf_name in enumerate(entry.hf_names):
      yield hf_name, value[expert].T
