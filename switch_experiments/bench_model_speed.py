"""Training examples per second of a small Switch model, its FLOP-matched dense twin, and the
same model built with moe.py's Switch layer (the speed column of the paper's Table 1).

Models (encoder-decoder, Mesh-TF Bitransformer, float32, Adafactor, one CPU device):
  every stack has ``--blocks`` pairs of blocks; the encoder pair is [SelfAttention, dense
  FFN, SelfAttention, FFN*] and the decoder pair [SelfAttention, EncDecAttention, dense FFN,
  SelfAttention, EncDecAttention, FFN*], where FFN* is (the paper's expert frequency 1/2):
    switch_gather  mtf_switch.SwitchFFN, dispatch_path="gather" (the CPU default)
    switch_einsum  mtf_switch.SwitchFFN, dispatch_path="einsum"
    moe_py         mesh_tensorflow.transformer.moe.MoE1D, moe_gating="switch"
    dense          DenseReluDense with d_ff = the expert d_ff (the same FLOPs per token)

Each model is built in its own graph and session in one process, warmed up, then timed in
rounds: each round runs ``--steps_per_round`` training steps (forward, backward, Adafactor
update) of every model, in an order that rotates from round to round. Reported: examples per
second from the median step time, the spread, and the median per-round ratio to the dense
twin. Prints a markdown table and a JSON line.

  PYTHONPATH=. python tools/bench_model_speed.py
"""

import argparse
import functools
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mtf_switch  # noqa: E402,F401  (compat repair before mesh_tensorflow)
import mesh_tensorflow as mtf  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from mesh_tensorflow.transformer import moe, transformer, transformer_layers  # noqa: E402

from mtf_switch import layers  # noqa: E402


MODELS = ("switch_gather", "switch_einsum", "moe_py", "dense")

_LAYER_STACK = functools.partial(
    transformer.LayerStack,
    sublayers_initial=[transformer.sublayer_dropout],
    sublayers_per_layer=[transformer.sublayer_rms_norm, transformer.sublayer_call_layer,
                         transformer.sublayer_dropout, transformer.sublayer_residual],
    sublayers_final=[transformer.sublayer_rms_norm, transformer.sublayer_dropout])


def _sparse_ffn(model, args):
  if model in ("switch_gather", "switch_einsum"):
    return layers.SwitchFFN(
        num_experts=args.experts, hidden_size=args.d_ff, group_size=args.group_size,
        capacity_factor_train=args.capacity_factor, summaries=False,
        dispatch_path=model.split("_")[1])
  if model == "moe_py":
    return moe.MoE1D(num_experts=args.experts, hidden_size=args.d_ff,
                     group_size=args.group_size, capacity_factor_train=args.capacity_factor,
                     moe_gating="switch", activation="relu")
  return transformer_layers.DenseReluDense(hidden_size=args.d_ff)


def _bitransformer(model, args):
  attention = dict(num_heads=args.heads, key_value_size=args.d_model // args.heads)

  def stack(block):
    specs = []
    for _ in range(args.blocks):
      specs += block(transformer_layers.DenseReluDense(hidden_size=args.d_ff))
      specs += block(_sparse_ffn(model, args))
    return _LAYER_STACK(specs)

  encoder_stack = stack(lambda ffn: [transformer_layers.SelfAttention(**attention), ffn])
  decoder_stack = stack(lambda ffn: [transformer_layers.SelfAttention(**attention),
                                     transformer_layers.EncDecAttention(**attention), ffn])
  common = dict(d_model=args.d_model, max_length=max(args.inputs_length, args.targets_length),
                layout="", mesh_shape="")
  encoder = transformer.Unitransformer(
      layer_stack=encoder_stack, input_vocab_size=args.vocab, output_vocab_size=None,
      autoregressive=False, name="encoder", **common)
  decoder = transformer.Unitransformer(
      layer_stack=decoder_stack, input_vocab_size=args.vocab, output_vocab_size=args.vocab,
      autoregressive=True, name="decoder", **common)
  return transformer.Bitransformer(encoder, decoder)


class Trainer:
  """One model's training step in its own graph and session."""

  def __init__(self, model, args):
    self.model = model
    graph = tf.Graph()
    with graph.as_default():
      tf.set_random_seed(0)
      mesh = mtf.Mesh(mtf.Graph(), "mesh")
      batch = mtf.Dimension("batch", args.batch)

      def tokens(length, name):
        # Ids from 2 up: 0 is padding and 1 is EOS in Mesh-TF's conventions.
        ids = tf.random.uniform([args.batch, length], 2, args.vocab, dtype=tf.int32)
        return mtf.import_tf_tensor(mesh, ids, mtf.Shape([batch, mtf.Dimension(name, length)]))

      inputs = tokens(args.inputs_length, "length")
      targets = tokens(args.targets_length, "length")
      bitransformer = _bitransformer(model, args)
      _, loss = bitransformer.call_simple(inputs, targets, compute_loss=True, mode="train",
                                          variable_dtype=mtf.VariableDType(tf.float32))
      variables = mesh.graph.trainable_variables
      grads = mtf.gradients([loss], [v.outputs[0] for v in variables])
      updates = mtf.optimize.AdafactorOptimizer().apply_grads(grads, variables)
      mesh_impl = mtf.placement_mesh_impl.PlacementMeshImpl(mtf.Shape([]), "", ["/cpu:0"])
      lowering = mtf.Lowering(mesh.graph, {mesh: mesh_impl})
      self.parameters = sum(int(np.prod(v.shape.to_integer_list)) for v in variables)
      self.train_op = tf.group([lowering.lowered_operation(op) for op in updates])
      config = tf.ConfigProto(intra_op_parallelism_threads=args.threads,
                              inter_op_parallelism_threads=args.threads)
      self.session = tf.Session(graph=graph, config=config)
      self.session.run(tf.global_variables_initializer())
      self.session.run(lowering.copy_masters_to_slices())

  def steps(self, count) -> float:
    """Seconds per step over ``count`` training steps."""
    start = time.perf_counter()
    for _ in range(count):
      self.session.run(self.train_op)
    return (time.perf_counter() - start) / count


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--experts", type=int, default=32)
  parser.add_argument("--capacity_factor", type=float, default=1.0)
  parser.add_argument("--group_size", type=int, default=1024)
  parser.add_argument("--d_model", type=int, default=512)
  parser.add_argument("--d_ff", type=int, default=2048)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--blocks", type=int, default=1,
                      help="pairs of blocks per stack (1 = 2 encoder + 2 decoder blocks)")
  parser.add_argument("--vocab", type=int, default=8192)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--inputs_length", type=int, default=128)
  parser.add_argument("--targets_length", type=int, default=128)
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps_per_round", type=int, default=2)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args(argv)
  models = [m for m in args.models.split(",") if m]
  for m in models:
    if m not in MODELS:
      parser.error(f"unknown model {m!r}; expected some of {MODELS}")

  print(f"# machine: {platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}; "
        f"{vars(args)}", flush=True)
  trainers = [Trainer(m, args) for m in models]
  times = {t.model: [] for t in trainers}
  ratios = {t.model: [] for t in trainers}
  try:
    for trainer in trainers:
      trainer.steps(1)  # warm-up
    for r in range(args.rounds):
      order = trainers[r % len(trainers):] + trainers[:r % len(trainers)]
      this_round = {t.model: t.steps(args.steps_per_round) for t in order}
      for model, seconds in this_round.items():
        times[model].append(seconds)
        if "dense" in this_round:
          ratios[model].append(this_round["dense"] / seconds)
  finally:
    for trainer in trainers:
      trainer.session.close()

  print("| model | parameters | median s/step | examples/s (median) | min..max s/step | "
        "speed vs dense twin (paired median) |")
  print("|" + " --- |" * 6)
  results = {}
  for trainer in trainers:
    model = trainer.model
    median = statistics.median(times[model])
    ratio = statistics.median(ratios[model]) if ratios[model] else None
    results[model] = {"parameters": trainer.parameters, "median_s_per_step": median,
                      "examples_per_s": args.batch / median, "min_s": min(times[model]),
                      "max_s": max(times[model]), "speed_vs_dense": ratio}
    print(f"| {model} | {trainer.parameters / 1e6:.1f}M | {median:.3f} | "
          f"{args.batch / median:.2f} | {min(times[model]):.3f}..{max(times[model]):.3f} | "
          f"{'-' if ratio is None else f'{ratio:.2f}'} |")
  print("JSON " + json.dumps({"args": vars(args), "results": results}), flush=True)
  return 0
