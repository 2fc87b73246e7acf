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
  ``shared``);
* gated FFNs (Switch models): ``mlp.wi_0`` + ``mlp.wi_1`` in the dense FFNs and
  ``mlp.experts.expert_<e>.wi_0`` / ``wi_1`` in the experts, in place of ``wi``. HF's
  SwitchTransformers has no gated FFN, so such a file was never saved by transformers: it is a
  T5X checkpoint renamed by transformers' ``convert_big_switch.py`` (google/switch-xxl-128,
  released.py), whose config.json cannot describe it;
* a separate softmax named ``decoder.lm_head.weight`` (T5X's ``decoder/logits_dense`` as
  ``convert_big_switch.py`` renames it): read as HF's ``lm_head.weight``, untied whatever
  config.json says (HF never loads that name, so no HF tie applies to it).

Everything else (activation, heads, capacity, buckets, router settings, tied softmax) comes
from config.json, with one rule for the activation of a gated release (``t5x_activation``):
config.json's exact ``"gelu"`` is read as the tanh GELU only when the tensors are gated Switch
FFNs, i.e. prove a T5X-converted checkpoint (T5X's ``"gelu"`` is flax's tanh approximation,
and no HF model runs these tensors to compute anything else); for every other model exact GELU
stays an error (HF computes it exactly there, and Mesh-TF cannot). Each field where the two
disagree is reported in one line, and the tensors win. A tied softmax is not overridden by an
``lm_head.weight``: with ``tie_word_embeddings`` true transformers replaces ``lm_head`` (and
the input embeddings) by ``shared`` on load, so a differing ``lm_head`` is refused (the
importer's alias check), not imported as a model HF never runs; only T5X's
``decoder.lm_head.weight`` unties it.
"""

import dataclasses
import re
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np

from mtf_switch.convert.hf_files import HFTensors
from mtf_switch.convert.spec import SWITCH_MODEL_TYPE, ConversionError, ModelSpec

_BLOCK = re.compile(r"^(encoder|decoder)\.block\.(\d+)\.")
_ROUTER = re.compile(
    r"^(encoder|decoder)\.block\.(\d+)\.layer\.\d+\.mlp\.router\.classifier\.weight$")
# A Switch model's FFN input projection(s), dense or expert: wi, or wi_0 and wi_1 when gated.
_FFN_INPUT = re.compile(
    r"^(?:encoder|decoder)\.block\.\d+\.layer\.\d+\.mlp\.(?:experts\.expert_\d+\.)?"
    r"(wi|wi_0|wi_1)\.weight$")
_INPUTS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# T5X's separate softmax (decoder/logits_dense) as convert_big_switch.py names it.
T5X_SOFTMAX, HF_SOFTMAX = "decoder.lm_head.weight", "lm_head.weight"


@dataclasses.dataclass(frozen=True)
class TensorStructure:
  """What the tensor names and shapes fix (see the module docstring)."""

  vocab_size: int
  encoder_sparse: Tuple[bool, ...]
  decoder_sparse: Tuple[bool, ...]
  num_experts: int  # 0 when no block is sparse
  gated: Optional[bool] = None  # Switch FFNs: wi_0 + wi_1 (True), wi (False), none (None)
  t5x_softmax: bool = False  # the softmax is stored as decoder.lm_head.weight


def ffn_gating(names: Iterable[str]) -> Optional[bool]:
  """Whether a Switch checkpoint's FFNs (dense and experts) are gated: True for wi_0 + wi_1,
  False for wi, None when it has no ``mlp`` FFN tensor (a T5 model). Raises ConversionError
  when some FFNs are gated and others not (the model has one FFN kind, as HF and T5X do)."""
  ungated = gated = None  # the first tensor of each kind
  for name in names:
    match = _FFN_INPUT.match(name)
    if match and match.group(1) == "wi":
      ungated = ungated or name
    elif match:
      gated = gated or name
  if gated and ungated:
    raise ConversionError(
        f"tensors {ungated!r} (ungated FFN) and {gated!r} (gated FFN) are both in the "
        f"checkpoint; every FFN and expert must be of one kind")
  return True if gated else (False if ungated else None)


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
  try:
    gated = ffn_gating(names)
  except ConversionError as error:
    raise ConversionError(f"{source.model_dir}: {error}") from None
  if T5X_SOFTMAX in names and HF_SOFTMAX in names:
    raise ConversionError(f"{source.model_dir}: both {HF_SOFTMAX!r} and {T5X_SOFTMAX!r} (T5X's "
                          f"softmax name) are present; which one is the softmax is ambiguous")
  return TensorStructure(
      vocab_size=source.shape("shared.weight")[0],
      encoder_sparse=tuple(i in sparse["encoder"] for i in range(blocks["encoder"])),
      decoder_sparse=tuple(i in sparse["decoder"] for i in range(blocks["decoder"])),
      num_experts=next(iter(experts.values()), 0),
      gated=gated, t5x_softmax=T5X_SOFTMAX in names)


def t5x_activation(config: Dict, hf_dir: str, where: str,
                   report: Callable[[str], None]) -> Dict:
  """``config`` with its exact GELU read as the tanh GELU when, and only when, the tensors prove
  a T5X-converted gated Switch model (module docstring); one ``report`` line says so. Any other
  config is returned as it is (and from_hf_config refuses exact GELU)."""
  if config.get("model_type") != SWITCH_MODEL_TYPE or config.get("dense_act_fn") != "gelu":
    return config
  if not ffn_gating(HFTensors(hf_dir).names()):
    return config
  report(f"{where}: dense_act_fn 'gelu' read as the tanh GELU (HF's 'gelu_new', Mesh-TF's "
         f"gelu): the gated FFN tensors (wi_0, wi_1) are a T5X checkpoint renamed by "
         f"convert_big_switch.py, which no HF model runs, and T5X's 'gelu' is the tanh "
         f"approximation")
  return dict(config, dense_act_fn="gelu_new")


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
  if spec.is_switch and structure.gated is not None:
    fields["gated"] = (spec.gated, structure.gated,
                       lambda gated: "gated FFNs (wi_0, wi_1)" if gated else "ungated FFNs (wi)")
  if spec.is_switch and structure.t5x_softmax:
    fields["tied_logits"] = (spec.tied_logits, False, lambda tied: (
        "softmax tied to the embedding" if tied else f"separate softmax ({T5X_SOFTMAX})"))
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
  tensors = read_structure(source)
  spec = reconcile(spec, tensors, where, report)
  if spec.is_switch and tensors.t5x_softmax:
    source.rename(HF_SOFTMAX, T5X_SOFTMAX)  # the name table's (names.py)
  if inputs_are_separate(spec, config, source):
    spec = dataclasses.replace(spec, separate_input_embeddings=True)
    # HF reads these two and never `shared`; a checkpoint saved without one of them would
    # be re-initialised at random by transformers, and is refused as a missing tensor.
  return spec
