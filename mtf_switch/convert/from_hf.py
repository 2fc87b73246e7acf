"""Hugging Face model directory -> Mesh-TF checkpoint + gin file (streaming).

    python -m mtf_switch.convert from-hf HF_DIR --output_dir OUT

OUT gets ``model.ckpt-0.*`` + ``checkpoint`` (restorable as a model_dir, or as
``utils.run.init_checkpoint = "OUT/model.ckpt-0"``), ``model.gin`` (this exact model),
``spiece.model`` when HF_DIR has one, and ``hf_config.json`` (the source config). Everything
is checked (config fields, every tensor's presence and shape, no unknown tensor) before any
tensor is written, and the whole output is built in a temporary sibling directory that is
renamed to OUT only at the end: a failed import leaves OUT untouched.
"""

import json
import os
import shutil
import sys
import time
from typing import Callable, Dict, Optional

import numpy as np

from mtf_switch.convert import imported_gin, structure
from mtf_switch.convert import names as names_lib
from mtf_switch.convert.hf_files import SPIECE, HFTensors, check_output_dir, staged_output_dir
from mtf_switch.convert.spec import ConversionError, ModelSpec, from_hf_config, read_hf_config
from mtf_switch.convert.tf_checkpoint import StreamingCheckpointWriter

GIN_FILE, HF_CONFIG_COPY = "model.gin", "hf_config.json"
# A Switch layer's expert stack is written in slices of at most this many bytes.
DEFAULT_SLICE_BYTES = 256 << 20
DTYPES = ("float32", "bfloat16")


def check_tensors(spec: ModelSpec, source: HFTensors) -> None:
  """Raises ConversionError naming unknown, missing and misshaped tensors."""
  table = names_lib.variable_table(spec)
  expected = {}
  for entry in table:
    for hf_name in entry.hf_names:
      expected[hf_name] = entry.hf_shape
  aliases = set(names_lib.embedding_aliases(spec)) | set(names_lib.unused_hf_names(spec))
  present = set(source.names())
  unknown = sorted(present - set(expected) - aliases)
  if unknown:
    raise ConversionError(
        f"{source.model_dir}: {len(unknown)} tensor(s) the {spec.model_type} model has no place "
        f"for: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
  missing = sorted(set(expected) - present)
  if missing:
    raise ConversionError(
        f"{source.model_dir}: {len(missing)} tensor(s) missing: "
        f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
  embedding_shape = (spec.vocab_size, spec.d_model)
  for name in sorted(present):
    want = expected.get(name, embedding_shape)
    got = source.shape(name)
    if tuple(got) != tuple(want):
      raise ConversionError(f"{source.model_dir}: tensor {name!r} has shape {tuple(got)}, "
                            f"the config needs {tuple(want)}")


def convert(hf_dir: str, output_dir: str, inputs_length: int = imported_gin.DEFAULT_INPUTS_LENGTH,
            targets_length: int = imported_gin.DEFAULT_TARGETS_LENGTH,
            slice_bytes: int = DEFAULT_SLICE_BYTES,
            progress: Optional[Callable[[str], None]] = None,
            dtype: str = "float32") -> ModelSpec:
  """Imports ``hf_dir`` into ``output_dir`` (which must not exist or be empty).

  dtype: the checkpoint's weight dtype, "float32" (HF's, exact) or "bfloat16" (Mesh-TF's
  default master dtype; what switch_mesh_transformer itself saves).
  """
  if dtype not in DTYPES:
    raise ConversionError(f"dtype={dtype!r}; expected one of {DTYPES}")
  progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
  check_output_dir(output_dir)
  config = read_hf_config(hf_dir)
  where = os.path.join(hf_dir, "config.json")
  # A T5X-converted gated release's exact "gelu" is T5X's tanh GELU (structure.py's rule).
  spec = from_hf_config(structure.t5x_activation(config, hf_dir, where, progress), where=where)
  source = HFTensors(hf_dir)
  # The tensors decide the structure; config.json the rest (structure.py).
  spec = structure.spec_from_checkpoint(spec, config, source, hf_dir, progress)
  if (not spec.tied_logits and "lm_head.weight" not in set(source.names())
      and config.get("tie_word_embeddings", True)):
    # transformers >= 5 T5: tied softmax without the d_model**-0.5 scale, which Mesh-TF
    # cannot tie; imported untied, with the embedding as the softmax's starting value.
    source.alias("lm_head.weight", "shared.weight")
  check_tensors(spec, source)

  with staged_output_dir(output_dir, prefix=".import-") as work:
    _write(spec, source, work, slice_bytes, progress, dtype)
    with open(os.path.join(work, GIN_FILE), "w") as f:
      f.write(imported_gin.model_gin(spec, os.path.abspath(hf_dir), inputs_length, targets_length,
                                dtype))
    with open(os.path.join(work, HF_CONFIG_COPY), "w") as f:
      json.dump(config, f, indent=2, sort_keys=True)
    if os.path.exists(os.path.join(hf_dir, SPIECE)):
      shutil.copyfile(os.path.join(hf_dir, SPIECE), os.path.join(work, SPIECE))
      with open(os.path.join(work, GIN_FILE), "a") as f:
        f.write(finetune_vocabulary_gin(os.path.join(os.path.abspath(output_dir), SPIECE)))
  return spec


def finetune_vocabulary_gin(spiece_path: str) -> str:
  """model.gin lines that make the fine-tuning tasks encode with the model's own vocabulary."""
  return ("\n# The model's own SentencePiece vocabulary for the fine-tuning tasks (GLUE, SuperGLUE,\n"
          "# SST-2): tasks/finetune_vocabulary.py.\n"
          "import tasks.finetune_vocabulary\n"
          f"finetune_vocabulary.path = {spiece_path!r}\n")


def _write(spec: ModelSpec, source: HFTensors, work: str, slice_bytes: int, progress,
           dtype: str) -> None:
  table = names_lib.variable_table(spec)
  groups: Dict[str, list] = {}
  for entry in table:
    groups.setdefault(entry.group, []).append(entry)
  writer = StreamingCheckpointWriter(work)
  start = time.time()
  for number, (group, entries) in enumerate(groups.items(), start=1):
    tensors, total = {}, 0
    for entry in entries:
      if entry.layout == names_lib.EXPERTS_TRANSPOSE:
        # One slice of experts at a time, each its own bundle part.
        per_expert = int(np.prod(entry.mtf_shape[1:])) * 4
        chunk = max(1, slice_bytes // per_expert)
        for first in range(0, len(entry.hf_names), chunk):
          hf_names = entry.hf_names[first:first + chunk]
          value = names_lib.to_mtf_value(entry, [source.get(n) for n in hf_names])
          writer.write({entry.mtf_name: value},
                       slices={entry.mtf_name: (entry.mtf_shape, first)}, dtype=dtype)
          total += value.nbytes
        continue
      value = names_lib.to_mtf_value(entry, [source.get(n) for n in entry.hf_names])
      tensors[entry.mtf_name] = value
      total += value.nbytes
    if tensors:
      writer.write(tensors, dtype=dtype)
    if group == "embeddings":
      _check_aliases(spec, source)
    progress(f"[{number}/{len(groups)}] {group}: {len(entries)} tensors, "
             f"{total / 2**20:.1f} MiB, {time.time() - start:.1f} s")
  writer.finish(global_step=0)


def _check_aliases(spec: ModelSpec, source: HFTensors) -> None:
  present = set(source.names())
  aliases = [a for a in names_lib.embedding_aliases(spec) if a in present]
  shared = source.get("shared.weight") if aliases else None
  for alias in names_lib.embedding_aliases(spec):
    if alias in aliases and not np.array_equal(source.get(alias), shared):
      what = ("the config ties the softmax to the embedding (tie_word_embeddings)"
              if alias == "lm_head.weight" else "HF ties it to shared.weight")
      raise ConversionError(f"{source.model_dir}: tensor {alias!r} differs from "
                            f"'shared.weight', but {what}")
