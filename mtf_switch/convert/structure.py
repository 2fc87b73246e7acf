"""The structure of an HF checkpoint, read from its tensors; config.json supplies the rest.

A config.json and the tensors beside it can describe different models: transformers derives
the sparse blocks from ``num_sparse_*_layers`` unless the config stores ``*_sparse_step``
(which then overrides it), and released files exist whose decoder fields describe no tensor
in the checkpoint (google/switch-c-2048). What the tensors can say, they decide:

* blocks per stack: the highest ``{encoder,decoder}.block.<i>`` + 1;
* sparse blocks: those with ``...layer.<j>.mlp.router.classifier.weight``;
* experts: that router's rows (every router must agree: HF has one ``num_experts``);
* vocabulary: the rows of ``shared.weight``;
* separate input embeddings: an untied Switch model whose ``encoder.embed_tokens`` or
  ``decoder.embed_tokens`` differs from ``shared`` (transformers 5.24 then uses them, not
  ``shared``).

Everything else (activation, heads, capacity, buckets, router settings, tied softmax) comes
from config.json. Each field where the two disagree is reported in one line, and the tensors
win. The tied softmax is not overridden: with ``tie_word_embeddings`` true transformers
replaces ``lm_head`` (and the input embeddings) by ``shared`` on load, so a differing
``lm_head`` is refused (the importer's alias check), not imported as a model HF never runs.
"""

import dataclasses
import re
from typing import Callable, Dict, Tuple

import numpy as np

from mtf_switch.convert.hf_files import HFTensors
from mtf_switch.convert.spec import ConversionError, ModelSpec

_BLOCK = re.compile(r"^(encoder|decoder)\.block\.(\d+)\.")
_ROUTER = re.compile(
    r"^(encoder|decoder)\.block\.(\d+)\.layer\.\d+\.mlp\.router\.classifier\.weight$")
_INPUTS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


@dataclasses.dataclass(frozen=True)
class TensorStructure:
  """What the tensor names and shapes fix (see the module docstring)."""

  vocab_size: int
  encoder_sparse: Tuple[bool, ...]
  decoder_sparse: Tuple[bool, ...]
  num_experts: int  # 0 when no block is sparse


def read_structure(source: HFTensors) -> TensorStructure:
  """Reads the layer counts, sparse blocks, experts and vocabulary from names and shapes."""
  names = list(source.names())
  if "shared.weight" not in names:
    raise ConversionError(f"{source.model_dir}: no 'shared.weight' tensor (the embedding)")
  blocks: Dict[str, int] = {"encoder": 0, "decoder": 0}
  sparse: Dict[str, set] = {"encoder": set(), "decoder": set()}
  experts = {}
  for name in names:
    match = _BLOCK.match(name)
    if match:
      blocks[match.group(1)] = max(blocks[match.group(1)], int(match.group(2)) + 1)
    match = _ROUTER.match(name)
    if match:
      sparse[match.group(1)].add(int(match.group(2)))
      experts[name] = source.shape(name)[0]
  counts = sorted(set(experts.values()), key=list(experts.values()).count)
  if len(counts) > 1:
    odd = sorted(name for name, count in experts.items() if count != counts[-1])
    raise ConversionError(
        f"{source.model_dir}: tensor {odd[0]!r} has shape {tuple(source.shape(odd[0]))}, the "
        f"other routers {(counts[-1],) + tuple(source.shape(odd[0]))[1:]} (HF has one "
        f"num_experts)")
  return TensorStructure(
      vocab_size=source.shape("shared.weight")[0],
      encoder_sparse=tuple(i in sparse["encoder"] for i in range(blocks["encoder"])),
      decoder_sparse=tuple(i in sparse["decoder"] for i in range(blocks["decoder"])),
      num_experts=next(iter(experts.values()), 0))


def _sparse_text(pattern: Tuple[bool, ...]) -> str:
  return f"{len(pattern)} blocks, sparse at {[i for i, s in enumerate(pattern) if s]}"


def reconcile(spec: ModelSpec, structure: TensorStructure, where: str,
              report: Callable[[str], None]) -> ModelSpec:
  """``spec`` with the fields the tensors fix taken from ``structure``; one ``report`` line
  per field where config.json said otherwise."""
  fields = {"vocab_size": (spec.vocab_size, structure.vocab_size, str)}
  for stack in ("encoder", "decoder"):
    fields[f"{stack}_sparse"] = (getattr(spec, f"{stack}_sparse"),
                                 getattr(structure, f"{stack}_sparse"), _sparse_text)
  if spec.is_switch and structure.num_experts:
    fields["num_experts"] = (spec.num_experts, structure.num_experts, str)
  changes = {}
  for field, (config_value, tensor_value, text) in fields.items():
    if field.endswith("_sparse") and not spec.is_switch:
      # T5: the block counts only (a router tensor is an unknown tensor for T5).
      config_value = (False,) * len(config_value)
      tensor_value = (False,) * len(tensor_value)
    if config_value != tensor_value:
      report(f"{where}: config.json and the tensors disagree on {field}: config "
             f"{text(config_value)}, tensors {text(tensor_value)}; following the tensors")
      changes[field] = tensor_value
  return dataclasses.replace(spec, **changes)


def inputs_are_separate(spec: ModelSpec, config: Dict, source: HFTensors) -> bool:
  """Whether an untied Switch model's encoder/decoder input embeddings differ from shared."""
  if not (spec.is_switch and not config.get("tie_word_embeddings", True)):
    return False
  present = set(source.names())
  shared = None
  for name in _INPUTS:
    if name in present:
      shared = source.get("shared.weight") if shared is None else shared
      value = source.get(name)
      if value.shape != shared.shape or not np.array_equal(value, shared):
        return True
  return False


def spec_from_checkpoint(spec: ModelSpec, config: Dict, source: HFTensors, where: str,
                         report: Callable[[str], None]) -> ModelSpec:
  """The model the checkpoint holds: ``spec`` (from config.json) reconciled with its tensors."""
  spec = reconcile(spec, read_structure(source), where, report)
  if inputs_are_separate(spec, config, source):
    spec = dataclasses.replace(spec, separate_input_embeddings=True)
    # HF reads these two and never `shared`; a checkpoint saved without one of them would
    # be re-initialised at random by transformers, and is refused as a missing tensor.
  return spec
