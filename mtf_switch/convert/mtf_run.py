"""Runs a Mesh-TF Bitransformer from gin files and a checkpoint in this process (eval mode).

Used by the parity tests and tools/hf_parity_full_size.py: parse gin as the CLI does
(mesh-tf's defaults.gin, the files, the bindings), build ``transformer.make_bitransformer``,
lower on one CPU device, restore the checkpoint, and return the decoder logits and, for every
Switch layer, its routing decision (chosen expert, kept or dropped, gate).
"""

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from mtf_base import compat  # noqa: F401  (before mesh_tensorflow)
from mtf_switch.gin_files import parse_gin


@dataclasses.dataclass
class MtfRun:
  logits: np.ndarray                       # [batch, targets_length, padded vocab]
  routing: Dict[str, Dict[str, np.ndarray]]  # layer scope -> expert/kept/gate [groups, tokens]
  variable_names: List[str]


def run_logits(gin_files: Sequence[str], checkpoint: str, inputs: np.ndarray,
               targets: np.ndarray, vocab_size: int, bindings: Sequence[str] = ()) -> MtfRun:
  """Decoder logits of the model on (inputs, targets); targets are shifted right inside.

  inputs: [batch, inputs_length] int32; targets: [batch, targets_length] int32 (no zeros,
  which Mesh-TF reads as padding).
  """
  import mesh_tensorflow as mtf
  import tensorflow.compat.v1 as tf
  from mesh_tensorflow.transformer import transformer

  import gin
  from mtf_switch import layers
  parse_gin(gin_files, bindings)
  graph = tf.Graph()
  recorded = []
  with graph.as_default(), gin.config_scope(""):
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    model = transformer.make_bitransformer(input_vocab_size=vocab_size,
                                           output_vocab_size=vocab_size, layout="",
                                           mesh_shape="")
    for stack in (model.encoder.layer_stack, model.decoder.layer_stack):
      for layer in stack.layers:
        if isinstance(layer, layers.SwitchFFN):
          apply = layer.apply

          def recording_apply(*args, _apply=apply, **kwargs):
            result = _apply(*args, **kwargs)
            recorded.append((tf.get_variable_scope().name, result.routing.choices[0]))
            return result

          layer.apply = recording_apply
    batch = mtf.Dimension("batch", inputs.shape[0])

    def ids(array, name):
      return mtf.import_tf_tensor(mesh, tf.constant(array.astype(np.int32)),
                                  mtf.Shape([batch, mtf.Dimension(name, array.shape[1])]))

    # Masters in the checkpoint's dtype (bfloat16 for a switch_mesh_transformer run), computed
    # in float32.
    master = tf.train.load_checkpoint(checkpoint).get_variable_to_dtype_map()[
        "encoder/rms_norm/scale"]
    logits, _ = model.call_simple(ids(inputs, "length"), ids(targets, "length"),
                                  compute_loss=False, mode=tf.estimator.ModeKeys.EVAL,
                                  variable_dtype=mtf.VariableDType(master, tf.float32,
                                                                   tf.float32))
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(mtf.Shape([]), "", ["/cpu:0"])
    lowering = mtf.Lowering(mtf_graph, {mesh: mesh_impl})
    fetch = {"logits": lowering.export_to_tf_tensor(logits)}
    for scope, choice in recorded:
      fetch[scope] = {k: lowering.export_to_tf_tensor(getattr(choice, k))
                      for k in ("expert", "kept", "gate")}
    masters = {v.name: v.get_master() for v in mtf_graph.all_variables}
    saver = tf.train.Saver(list(masters.values()))
    with tf.Session(graph=graph) as sess:
      saver.restore(sess, checkpoint)
      sess.run(lowering.copy_masters_to_slices())
      values = sess.run(fetch)
  routing = {k: v for k, v in values.items() if k != "logits"}
  return MtfRun(logits=values["logits"], routing=routing, variable_names=sorted(masters))
