"""The gin model and mesh files: they parse, the meshes fit the models, and the CPU sizes train.

Every ``gin/models/*.gin`` is loaded the way ``switch_mesh_transformer`` loads it (mesh-tf's
defaults.gin first). The TPU mesh files are checked against the paper models they are meant
for without building anything: each dimension a layout splits must divide by its mesh
dimension. The tiny and small CPU models are built from their gin files, lowered on virtual
CPU devices with one of the CPU mesh files each, and trained for a few steps of a copy task on
one fixed batch: the loss must fall.
"""

import glob
import os

import mesh_tensorflow as mtf
import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import transformer, transformer_layers

import gin
import switch_cli.cluster  # noqa: F401  (registers switch_cluster, bound by mesh/cluster_*.gin)
from mtf_switch import layers
from mtf_switch.gin_files import parse_gin

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL_FILES = sorted(os.path.relpath(p, os.path.join(REPO, "gin"))
                     for p in glob.glob(os.path.join(REPO, "gin", "models", "*.gin")))
MESH_FILES = sorted(os.path.relpath(p, os.path.join(REPO, "gin"))
                    for p in glob.glob(os.path.join(REPO, "gin", "mesh", "*.gin")))
VOCAB = 32128

# Which TPU layout each paper model is meant to run with (Section 5; T5's own gin files use
# 2-way model parallelism for Large and 8-way for XXL).
TPU_PLANS = [
    ("models/t5_base.gin", "mesh/tpu_data.gin"),
    ("models/t5_large.gin", "mesh/tpu_model_data.gin"),
    ("models/t5_xxl.gin", "mesh/tpu_model.gin"),
    ("models/switch_base.gin", "mesh/tpu_expert_data.gin"),
    ("models/switch_base.gin", "mesh/tpu_expert_model_data.gin"),
    ("models/moe_base.gin", "mesh/tpu_expert_data.gin"),
    ("models/switch_base_plus.gin", "mesh/tpu_expert_data.gin"),
    ("models/switch_large.gin", "mesh/tpu_expert_model_data.gin"),
    ("models/switch_xxl.gin", "mesh/tpu_expert_model_data.gin"),
    ("models/switch_c.gin", "mesh/tpu_expert_data.gin"),
]

# (model, CPU mesh, Switch/MoE layer class or None, its layer count over both stacks).
CPU_RUNS = [
    ("models/t5_tiny.gin", "mesh/cpu_data_parallel.gin", None, 0),
    ("models/switch_tiny.gin", "mesh/cpu2_expert_data.gin", layers.SwitchFFN, 2),
    ("models/moe_tiny.gin", "mesh/cpu2_expert_data.gin", layers.MoEFFN, 2),
    ("models/switch_c_tiny.gin", "mesh/cpu2_expert_data.gin", layers.SwitchFFN, 4),
    ("models/switch_tiny_every_ffn.gin", "mesh/cpu_data_parallel.gin", layers.SwitchFFN, 4),
    ("models/t5_small.gin", "mesh/cpu2_model.gin", None, 0),
    ("models/switch_small.gin", "mesh/cpu2_data.gin", layers.SwitchFFN, 4),
]
BATCH, LENGTH, TOKEN_IDS, STEPS = 4, 16, 32, 2


@pytest.fixture(autouse=True)
def _forget_gin_bindings():
  """gin is global: bindings parsed here (activation = "geglu", ...) must not reach the
  layers other test files construct directly."""
  yield
  gin.clear_config()


@pytest.mark.parametrize("model_file", MODEL_FILES)
def test_model_file_parses(model_file):
  parse_gin([model_file, "mesh/cpu_data_parallel.gin"])
  assert gin.query_parameter("%d_model") > 0
  assert gin.query_parameter("utils.run.mesh_shape") == "batch:1"


@pytest.mark.parametrize("mesh_file", MESH_FILES)
def test_mesh_file_parses_to_a_mesh_and_layout(mesh_file):
  parse_gin(["models/switch_tiny.gin", mesh_file])
  mesh_shape = mtf.convert_to_shape(gin.query_parameter("utils.run.mesh_shape"))
  layout = mtf.convert_to_layout_rules(gin.query_parameter("utils.run.layout_rules"))
  # Every layout rule names a mesh dimension this mesh has (LayoutRules keeps no public list).
  assert {mesh_dim for _, mesh_dim in layout._pairs} <= set(mesh_shape.dimension_names)
  if "cpu" in mesh_file:
    assert len(gin.query_parameter("utils.run.mesh_devices")) == mesh_shape.size
  elif "cluster" in mesh_file:  # devices come from the workers (switch_cli/cluster.py)
    assert mesh_shape.size % gin.query_parameter("switch_cluster.devices_per_worker") == 0
  else:
    assert mesh_shape.size in (8, 32)  # a v3-8 or v3-32 slice


def _split_dims_of_model():
  """The dimensions a layout may split, at the sizes the parsed model gives them."""
  dims = {"d_ff": "%d_ff", "expert_hidden": "%d_ff", "heads": "%num_heads"}
  sizes = {name: gin.query_parameter(macro) for name, macro in dims.items()}
  sizes["vocab"] = VOCAB
  for layer in ("mtf_switch.SwitchFFN", "mtf_switch.MoEFFN"):
    try:
      sizes["experts"] = gin.query_parameter(f"{layer}.num_experts")
    except ValueError:
      pass
  return sizes


@pytest.mark.parametrize("model_file,mesh_file", TPU_PLANS)
def test_tpu_layout_divides_the_paper_model(model_file, mesh_file):
  parse_gin([model_file, mesh_file])
  mesh_shape = gin.query_parameter("utils.run.mesh_shape")
  layout = gin.query_parameter("utils.run.layout_rules")
  for name, size in _split_dims_of_model().items():
    split = mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, mtf.Dimension(name, size))
    assert size % split == 0, f"{name}={size} over {split} devices ({mesh_file})"
  # The data-parallel replicas must be few enough to receive whole sequences.
  batch_split = mtf.tensor_dim_to_mesh_dim_size(layout, mesh_shape, mtf.Dimension("batch", 2048))
  assert 2048 % batch_split == 0


def test_base_heads_do_not_divide_over_eight_cores():
  """What tpu_model.gin warns about: T5-Base's 12 heads cannot split 8 ways."""
  parse_gin(["models/t5_base.gin", "mesh/tpu_model.gin"])
  heads = gin.query_parameter("%num_heads")
  split = mtf.tensor_dim_to_mesh_dim_size(
      gin.query_parameter("utils.run.layout_rules"), gin.query_parameter("utils.run.mesh_shape"),
      mtf.Dimension("heads", heads))
  assert (heads, split) == (12, 8)


def _copy_task_batch():
  # Ids from 2 up: 0 is padding and 1 is EOS in Mesh-TF's conventions.
  return np.random.RandomState(0).randint(2, TOKEN_IDS, size=(BATCH, LENGTH)).astype(np.int32)


def _train_from_gin(model_file, mesh_file, steps):
  """Builds the gin model on the gin mesh, lowers it and trains; returns (losses, model)."""
  parse_gin([model_file, mesh_file])
  mesh_shape = gin.query_parameter("utils.run.mesh_shape")
  layout = gin.query_parameter("utils.run.layout_rules")
  devices = gin.query_parameter("utils.run.mesh_devices")
  graph = tf.Graph()
  with graph.as_default():
    tf.set_random_seed(0)
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    model = transformer.make_bitransformer(
        input_vocab_size=TOKEN_IDS, output_vocab_size=TOKEN_IDS, layout=layout,
        mesh_shape=mesh_shape)
    shape = mtf.Shape([mtf.Dimension("batch", BATCH), mtf.Dimension("length", LENGTH)])
    tokens = mtf.import_tf_tensor(mesh, tf.constant(_copy_task_batch()), shape)
    _, loss = model.call_simple(tokens, tokens, compute_loss=True, mode="train",
                                variable_dtype=mtf.VariableDType(tf.float32))
    variables = mtf_graph.trainable_variables
    grads = mtf.gradients([loss], [v.outputs[0] for v in variables])
    # The tiny gin files' own recipe: Adafactor (mesh-tf's default) at a constant 0.01.
    updates = mtf.optimize.AdafactorOptimizer(learning_rate=0.01).apply_grads(grads, variables)
    mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(
        mtf.convert_to_shape(mesh_shape), layout, devices)
    lowering = mtf.Lowering(mtf_graph, {mesh: mesh_impl})
    tf_loss = tf.cast(lowering.export_to_tf_tensor(loss), tf.float32)
    train_op = tf.group([lowering.lowered_operation(op) for op in updates])
    init = tf.global_variables_initializer()
    copy_to_slices = lowering.copy_masters_to_slices()
    config = tf.ConfigProto(device_count={"CPU": 4}, intra_op_parallelism_threads=2,
                            inter_op_parallelism_threads=2)
    # Grappler's graph rewrites take longer than the few steps they would speed up.
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with tf.Session(graph=graph, config=config) as sess:
      sess.run(init)
      sess.run(copy_to_slices)
      losses = []
      for _ in range(steps):
        losses.append(float(sess.run(tf_loss)))
        sess.run(train_op)
      losses.append(float(sess.run(tf_loss)))
  return losses, model


@pytest.mark.parametrize("model_file,mesh_file,expert_layer,expert_layers", CPU_RUNS)
def test_cpu_model_trains_from_its_gin_file(model_file, mesh_file, expert_layer, expert_layers):
  losses, model = _train_from_gin(model_file, mesh_file, STEPS)
  stack_layers = model.encoder.layer_stack.layers + model.decoder.layer_stack.layers
  found = [layer for layer in stack_layers if isinstance(layer, (layers.SwitchFFN, layers.MoEFFN))]
  assert len(found) == expert_layers
  assert all(isinstance(layer, expert_layer) for layer in found)
  dense = [layer for layer in stack_layers if isinstance(layer, transformer_layers.DenseReluDense)]
  assert dense or expert_layers  # every FFN slot holds one or the other
  assert np.all(np.isfinite(losses)), losses
  # A few Adafactor steps on one fixed batch of copies: the loss must already be going down.
  assert losses[-1] < losses[0] - 0.2, losses
