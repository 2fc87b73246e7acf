"""Unsupervised objectives over a ``text`` feature, as t5 defines them for C4.

Each objective is t5's own preprocessing chain (``t5.data.preprocessors``), so the examples match
t5's ``c4_v220_span_corruption`` / ``c4_v220_prefix_lm`` / ``c4_v220_full_lm`` given the same
text. Lengths come from the caller's ``sequence_length`` (t5_mesh_transformer's
``utils.run.sequence_length``); documents of any length are handled by t5's chunking:
``select_random_chunk`` keeps a random window of at most 65,536 tokens of a longer document, and
``split_tokens`` cuts what remains into pieces that fit the inputs length.
"""

import functools

from mtf_base import compat  # noqa: F401  (t5 imports mesh_tensorflow)

# isort: split
import seqio
from t5.data import preprocessors as t5_preprocessors

SPAN_CORRUPTION = "span_corruption"  # T5's and the Switch Transformer's pre-training objective
PREFIX_LM = "prefix_lm"  # inputs: a prefix of a chunk; targets: the rest of it
FULL_LM = "full_lm"  # decoder-only language modelling: targets only
OBJECTIVES = (SPAN_CORRUPTION, PREFIX_LM, FULL_LM)


def check_objective(objective: str) -> None:
  if objective not in OBJECTIVES:
    raise ValueError(f"Unknown objective {objective!r}: expected one of {OBJECTIVES}")


def output_features(vocabulary: seqio.Vocabulary, objective: str = SPAN_CORRUPTION) -> dict:
  """The output features of an objective: T5's (inputs optional, both with EOS)."""
  check_objective(objective)
  targets = seqio.Feature(vocabulary=vocabulary, add_eos=True)
  if objective == FULL_LM:
    return {"targets": targets}
  return {"inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
          "targets": targets}


def text_preprocessors(objective: str = SPAN_CORRUPTION, text_key: str = "text") -> list:
  """The seqio preprocessors turning ``{text_key: string}`` records into ``objective`` examples."""
  check_objective(objective)
  chain = [
      functools.partial(seqio.preprocessors.rekey,
                        key_map={"inputs": None, "targets": text_key}),
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
  ]
  if objective == SPAN_CORRUPTION:
    return chain + [t5_preprocessors.span_corruption, seqio.preprocessors.append_eos_after_trim]
  if objective == PREFIX_LM:
    return chain + [t5_preprocessors.prefix_lm, seqio.preprocessors.append_eos_after_trim]
  # full_lm appends EOS at document ends itself, before concatenating and splitting.
  return chain + [t5_preprocessors.full_lm]
