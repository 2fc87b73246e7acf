"""Builds a Mesh-TF graph on a mesh of virtual CPU devices, runs it, and returns numpy arrays.

Tests describe the computation with a ``build(mesh, inputs)`` function that returns a dict of
named mtf Tensors; the harness imports numpy inputs, lowers on the requested mesh, sets weights
by name (so two implementations can share them), and fetches outputs and, optionally, the
gradients of a scalar with respect to the inputs and every trainable variable.
"""

import dataclasses
from typing import Callable, Dict, Optional

import mesh_tensorflow as mtf
import numpy as np
import tensorflow.compat.v1 as tf

NUM_VIRTUAL_CPUS = 8


@dataclasses.dataclass
class MeshRun:
  outputs: Dict[str, np.ndarray]
  input_grads: Dict[str, np.ndarray]
  variable_grads: Dict[str, np.ndarray]   # by variable name
  variables: Dict[str, np.ndarray]        # values after initialisation / assignment
  summaries: Dict[str, float] = dataclasses.field(default_factory=dict)  # scalar summaries


def run_on_mesh(build: Callable[[mtf.Mesh, Dict[str, mtf.Tensor]], Dict[str, mtf.Tensor]],
                inputs: Dict[str, tuple],
                mesh_shape: str = "",
                layout: str = "",
                weights: Optional[Dict[str, np.ndarray]] = None,
                grad_of: Optional[str] = None,
                seed: int = 0) -> MeshRun:
  """Runs ``build`` once on a fresh graph.

  Args:
    build: (mesh, {name: mtf.Tensor}) -> {name: mtf.Tensor}.
    inputs: {name: (np.ndarray, [mtf.Dimension, ...])}.
    mesh_shape, layout: Mesh-TF strings, e.g. "batch:4;model:2", "batch:batch;d_ff:model".
    weights: {variable-name suffix: value}; each is assigned to the one variable whose name
      ends with the suffix (an error if none or several match).
    grad_of: name of a scalar output to differentiate.
    seed: graph-level random seed.
  """
  weights = weights or {}
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(seed)
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    mtf_inputs = {
        name: mtf.import_tf_tensor(mesh, tf.constant(value), mtf.Shape(dims))
        for name, (value, dims) in inputs.items()
    }
    outputs = build(mesh, mtf_inputs)
    variables = list(mtf_graph.trainable_variables)
    input_grads, variable_grads = {}, {}
    if grad_of is not None:
      wrt = list(mtf_inputs.values()) + [v.outputs[0] for v in variables]
      grads = mtf.gradients([outputs[grad_of]], wrt)
      for name, grad in zip(mtf_inputs, grads[:len(mtf_inputs)], strict=True):
        input_grads[name] = grad
      for var, grad in zip(variables, grads[len(mtf_inputs):], strict=True):
        if grad is not None:
          variable_grads[var.name] = grad

    shape = mtf.convert_to_shape(mesh_shape)
    devices = ["/cpu:%d" % i for i in range(max(1, shape.size))]
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(shape, layout, devices)
    lowering = mtf.Lowering(mtf_graph, {mesh: mesh_impl})

    def export(tensors):
      return {k: lowering.export_to_tf_tensor(v) for k, v in tensors.items()
              if isinstance(v, mtf.Tensor)}

    fetches = {
        "outputs": export(outputs),
        "input_grads": export(input_grads),
        "variable_grads": export(variable_grads),
    }
    # The v1 scalar summaries lowering added (mtf_switch.summaries), by tag.
    fetches["summaries"] = tf.get_collection(tf.GraphKeys.SUMMARIES)
    masters = {v.name: v.get_master() for v in variables}
    assigns = []
    for suffix, value in weights.items():
      matches = [name for name in masters if name.endswith(suffix)]
      if len(matches) != 1:
        raise KeyError(f"weight {suffix!r} matches {matches} of {sorted(masters)}")
      assigns.append(tf.assign(masters[matches[0]], value.astype(np.float32)))
    config = tf.ConfigProto(device_count={"CPU": NUM_VIRTUAL_CPUS},
                            intra_op_parallelism_threads=2, inter_op_parallelism_threads=2)
    with tf.Session(graph=graph, config=config) as sess:
      sess.run(tf.global_variables_initializer())
      if assigns:
        sess.run(assigns)
      sess.run(lowering.copy_masters_to_slices())
      result, variable_values = sess.run([fetches, masters])
  summaries = {}
  for serialized in result["summaries"]:
    for value in tf.Summary.FromString(serialized).value:
      if value.tag in summaries:
        raise ValueError(f"summary {value.tag!r} written twice")
      summaries[value.tag] = value.simple_value
  return MeshRun(outputs=result["outputs"], input_grads=result["input_grads"],
                 variable_grads=result["variable_grads"], variables=variable_values,
                 summaries=summaries)
