"""Reading a Hugging Face model directory tensor by tensor; writing one.

Reads safetensors (``model.safetensors`` or shards listed in ``model.safetensors.index.json``)
through ``safe_open`` and PyTorch pickles (``pytorch_model.bin`` or its index) through
``torch.load(mmap=True)``: in both cases only the tensor asked for is brought into memory,
as float32. Both converters build their output directory aside and move it into place at the
end (``staged_output_dir``).
"""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Dict, Iterable, Iterator, Tuple

import numpy as np

from mtf_switch.convert.spec import ConversionError

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
SPIECE = "spiece.model"


class HFTensors:
  """The tensors of one HF model directory, by name, loaded one at a time."""

  def __init__(self, model_dir: str):
    self.model_dir = model_dir
    self._file_of: Dict[str, str] = {}
    self._open: Dict[str, object] = {}
    for index_name, single, kind in ((SAFETENSORS_INDEX, SAFETENSORS, "safetensors"),
                                     (TORCH_BIN_INDEX, TORCH_BIN, "torch")):
      index_path, single_path = (os.path.join(model_dir, n) for n in (index_name, single))
      if os.path.exists(index_path):
        with open(index_path) as f:
          weight_map = json.load(f)["weight_map"]
        for name, shard in weight_map.items():
          if not os.path.exists(os.path.join(model_dir, shard)):
            raise ConversionError(f"{index_path}: shard {shard!r} (of {name!r}) is missing")
          self._file_of[name] = shard
        self.kind = kind
        break
      if os.path.exists(single_path):
        self.kind = kind
        for name in self._names_in(single):
          self._file_of[name] = single
        break
    else:
      raise ConversionError(
          f"{model_dir}: no weights ({SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN} or "
          f"{TORCH_BIN_INDEX})")

  def alias(self, name: str, target: str) -> None:
    """Makes ``name`` read ``target`` (a tensor HF ties to another and did not save)."""
    self._file_of[name] = self._file_of[target]
    self._alias_of = {**getattr(self, "_alias_of", {}), name: target}

  def rename(self, name: str, stored: str) -> None:
    """Shows the stored tensor ``stored`` as ``name`` only (another writer's name for a tensor
    HF calls ``name``, e.g. T5X's softmax ``decoder.lm_head.weight``, structure.py)."""
    self._file_of[name] = self._file_of.pop(stored)
    self._alias_of = {**getattr(self, "_alias_of", {}), name: stored}

  def _real(self, name: str) -> str:
    return getattr(self, "_alias_of", {}).get(name, name)

  def _handle(self, file_name: str):
    if file_name not in self._open:
      path = os.path.join(self.model_dir, file_name)
      if self.kind == "safetensors":
        from safetensors import safe_open
        self._open[file_name] = safe_open(path, framework="pt")
      else:
        import torch
        self._open[file_name] = torch.load(path, map_location="cpu", mmap=True,
                                           weights_only=True)
    return self._open[file_name]

  def _names_in(self, file_name: str) -> Iterable[str]:
    handle = self._handle(file_name)
    return list(handle.keys())

  def names(self) -> Iterable[str]:
    return self._file_of.keys()

  def shape(self, name: str) -> Tuple[int, ...]:
    handle = self._handle(self._file_of[name])
    if self.kind == "safetensors":
      return tuple(handle.get_slice(self._real(name)).get_shape())
    return tuple(handle[self._real(name)].shape)

  def get(self, name: str) -> np.ndarray:
    import torch
    handle = self._handle(self._file_of[name])
    name = self._real(name)
    tensor = handle.get_tensor(name) if self.kind == "safetensors" else handle[name]
    return tensor.to(torch.float32).numpy()


def save_safetensors_shards(tensors: Iterable[Tuple[str, np.ndarray]], out_dir: str,
                            max_shard_bytes: int = 2 << 30) -> None:
  """Writes (name, float32 array) pairs as safetensors shards of at most max_shard_bytes,
  holding one shard in memory; writes the index when there is more than one shard."""
  from safetensors.numpy import save_file
  shards, current, size, total = [], {}, 0, 0

  def flush():
    nonlocal current, size
    if current:
      shards.append(current)
      save_file(current, os.path.join(out_dir, f"part-{len(shards):05d}.safetensors"),
                metadata={"format": "pt"})
      shards[-1] = list(current)
      current, size = {}, 0

  for name, array in tensors:
    if current and size + array.nbytes > max_shard_bytes:
      flush()
    current[name] = np.ascontiguousarray(array, dtype=np.float32)
    size += array.nbytes
    total += array.nbytes
  flush()
  if len(shards) == 1:
    os.rename(os.path.join(out_dir, "part-00001.safetensors"), os.path.join(out_dir, SAFETENSORS))
    return
  weight_map = {}
  for k, names in enumerate(shards, start=1):
    final = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
    os.rename(os.path.join(out_dir, f"part-{k:05d}.safetensors"), os.path.join(out_dir, final))
    for name in names:
      weight_map[name] = final
  with open(os.path.join(out_dir, SAFETENSORS_INDEX), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def check_output_dir(output_dir: str) -> None:
  """Raises ConversionError unless output_dir is absent or an empty directory."""
  if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise ConversionError(f"--output_dir {output_dir} exists and is not empty")


@contextlib.contextmanager
def staged_output_dir(output_dir: str, prefix: str) -> Iterator[str]:
  """Yields a fresh temporary directory beside output_dir to write the whole output into.

  When the block ends normally the directory is renamed to output_dir (an empty directory
  already there is replaced); when it raises, the directory is deleted and output_dir is left
  as it was. The sibling is on the same file system, so the rename is atomic: a reader never
  sees a half-written output_dir.
  """
  parent = os.path.dirname(os.path.abspath(output_dir))
  os.makedirs(parent, exist_ok=True)
  work = tempfile.mkdtemp(prefix=prefix, dir=parent)
  try:
    yield work
    if os.path.isdir(output_dir):
      os.rmdir(output_dir)
    os.rename(work, output_dir)
  except BaseException:
    shutil.rmtree(work, ignore_errors=True)
    raise
