"""Writing a TensorFlow (V2 bundle) checkpoint a group of tensors at a time.

TensorFlow's Python API writes checkpoints from variables, i.e. from a model held in memory.
Here every group of tensors is written with the ``SaveV2`` op as its own one-shard bundle
(a large tensor, such as a Switch layer's [experts, d_model, d_ff] stack, as several slices of
a range of experts each), and ``MergeV2Checkpoints`` then joins the bundles into one
checkpoint, as TensorFlow's own sharded saver does: at no time is more than one group (or
slice) in memory. Restoring reads the slices back as whole variables; the result is
indistinguishable from a checkpoint written by a ``tf.train.Saver``.
"""

import os
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np

from mtf_switch.convert.names import GLOBAL_STEP


class StreamingCheckpointWriter:
  """Collects bundle parts in ``directory`` and merges them into ``model.ckpt-<step>``."""

  def __init__(self, directory: str):
    self.directory = directory
    self._parts: List[str] = []
    self._parts_dir = os.path.join(directory, "parts")
    os.makedirs(self._parts_dir, exist_ok=True)

  def write(self, tensors: Dict[str, np.ndarray],
            slices: Optional[Dict[str, Tuple[Tuple[int, ...], int]]] = None,
            dtype: str = "float32") -> None:
    """Writes one part.

    Args:
      tensors: name -> array (float32, or int64 for the global step).
      slices: name -> (full shape, start along axis 0), for a tensor of which ``tensors``
        holds rows start .. start + len only.
      dtype: float arrays are stored in this dtype ("float32" or "bfloat16", rounded to
        nearest even).
    """
    import tensorflow as tf
    slices = slices or {}
    names, specs, values = [], [], []
    for name, value in tensors.items():
      names.append(name)
      if value.dtype == np.float32 and dtype != "float32":
        value = tf.cast(tf.constant(value), dtype)
      values.append(value)
      if name in slices:
        full, start = slices[name]
        rest = ":".join("-" for _ in full[1:])
        specs.append(" ".join(str(n) for n in full) + f" {start},{value.shape[0]}" +
                     (":" + rest if rest else ""))
      else:
        specs.append("")
    prefix = os.path.join(self._parts_dir, f"part-{len(self._parts):06d}")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=specs,
                      tensors=values)
    self._parts.append(prefix)

  def finish(self, global_step: int = 0) -> str:
    """Adds the global step, merges the parts; returns the checkpoint prefix."""
    import tensorflow as tf
    self.write({GLOBAL_STEP: np.int64(global_step)})
    prefix = os.path.join(self.directory, f"model.ckpt-{global_step}")
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=self._parts, destination_prefix=prefix,
                                  delete_old_dirs=False)
    shutil.rmtree(self._parts_dir)
    name = os.path.basename(prefix)
    with open(os.path.join(self.directory, "checkpoint"), "w") as f:
      f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    return prefix
