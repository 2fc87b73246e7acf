"""The Switch layers' routing statistics at every checkpoint of a finished run, replayed.

A run's routing statistics (expert load per layer, dropped fraction, router entropy) normally
come from its training summaries. A run that has none - trained before ``mtf_switch.summaries``
carried them out of Mesh-TF's microbatch loop, or with summaries off - can still show how its
routers balanced over training: this tool rebuilds the run's training step, restores each
checkpoint in turn, and runs the step's forward pass (training mode: the training capacity
factor, router policy and jitter, Mesh-TF's microbatches) on the same fixed batches each time,
without updating anything. Each scalar is averaged over the batches.

Repeatability: the batches are the same in every replay (their digest is recorded), and the
router's jitter is seeded (graph seed, Python's seed and hash seed), but a second replay of the
same checkpoints can still route a few tokens differently: measured on a 16-expert model, the
first checkpoint replayed identically and the second's expert loads moved by up to 0.006
(1.1076 against 1.1014). TensorFlow draws the jitter of every microbatch from one stateful
random op inside Mesh-TF's microbatch loop, whose iterations may run in either order (the
likely cause; not traced further).

    PYTHONPATH=. python tools/replay_routing.py --model_dir runs/x/switch_16 \
        --output routing.json -- --gin_file=models/switch_tiny_lm.gin \
        --gin_file=mesh/cpu_data_parallel.gin --gin_param='MIXTURE_NAME = "switch_docs_full_lm"' \
        ...the run's own training flags...

Everything after ``--`` is the training command's flags, as given to ``switch_mesh_transformer``
(the gin files and parameters fix the model, its mesh and its input pipeline), without
``--model_dir``: the step is built in a scratch directory and only reads the run's checkpoints. The batches come
from ``--split`` (default validation) through the run's own training input pipeline: bind
``mesh_train_dataset_fn.seed`` among those flags to fix them.

The output is JSON: ``{"scalars": {tag: {step: value}}, "batches": n, "batch_size": b,
"split": s, "steps": [...]}``, the tags being the layers' summary names (``moe/<layer>/...``).
A rerun keeps what the file already holds and replays only new checkpoints.
"""

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
from typing import Any, Dict, List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROUTING_PREFIX = "moe/"


def read_output(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def checkpoint_steps(model_dir: str) -> List[int]:
  """Steps of the model.ckpt-N checkpoints in model_dir (complete ones: .index present)."""
  steps = []
  for name in os.listdir(model_dir):
    if name.startswith("model.ckpt-") and name.endswith(".index"):
      steps.append(int(name[len("model.ckpt-"):-len(".index")]))
  return sorted(steps)


def mean_scalars(per_batch: List[Dict[str, float]]) -> Dict[str, float]:
  """{tag: mean over batches}; every batch must carry the same tags."""
  tags = set(per_batch[0])
  for scalars in per_batch[1:]:
    if set(scalars) != tags:
      raise ValueError(f"batches carry different summaries: {sorted(tags ^ set(scalars))}")
  return {tag: sum(s[tag] for s in per_batch) / len(per_batch) for tag in sorted(tags)}


Batch = Dict[str, Any]  # a batch's features: name -> numpy array


def read_fixed_batches(train_dataset_fn, sequence_length, vocabulary, split: str,
                       batch_size: int, batches: int) -> List[Batch]:
  """Up to ``batches`` batches of ``split``, read once through the run's own input pipeline
  (its task, preprocessing and packing), as numpy feature dicts."""
  import tensorflow.compat.v1 as tf

  with tf.Graph().as_default():
    dataset = train_dataset_fn(sequence_length=sequence_length, vocabulary=vocabulary,
                               dataset_split=split)
    dataset = dataset.batch(batch_size, drop_remainder=True).take(batches)
    next_batch = tf.data.make_one_shot_iterator(dataset).get_next()
    fixed = []
    with tf.Session() as sess:
      try:
        for _ in range(batches):
          fixed.append(sess.run(next_batch))
      except tf.errors.OutOfRangeError:
        pass
  return fixed


def batches_digest(fixed: List[Batch]) -> str:
  """SHA-1 of the batches' features (names and bytes, in order): that two replays saw the
  same tokens."""
  digest = hashlib.sha1()
  for batch in fixed:
    for key in sorted(batch):
      digest.update(key.encode())
      digest.update(batch[key].tobytes())
  return digest.hexdigest()


def build_training_step(estimator, example_batch: Batch):
  """The run's training step in the current graph, fed by placeholders shaped like
  ``example_batch``: (features, its scalar summaries, mesh-tf's restore hooks, its saver)."""
  import mesh_tensorflow as mtf
  import tensorflow.compat.v1 as tf
  from tensorflow.compat.v1 import estimator as tf_estimator

  # Fixed seeds, so that the router's input jitter draws the same noise in every replay:
  # TensorFlow's graph seed (the run's mtf_switch.init_seed), and Python's own, from which
  # Mesh-TF's placement mesh draws each random op's seed (random.random(), then hash():
  # hence also PYTHONHASHSEED, which tools/replay_routing.py fixes before it starts).
  seed = estimator.config.tf_random_seed or 0
  tf.set_random_seed(seed)
  random.seed(seed)
  features = {k: tf.placeholder(v.dtype, v.shape, name=k) for k, v in example_batch.items()}
  tf.train.get_or_create_global_step()
  spec = estimator.model_fn(features, None, tf_estimator.ModeKeys.TRAIN, estimator.config)
  summaries = [s for s in tf.get_collection(tf.GraphKeys.SUMMARIES)
               if s.op.type == "ScalarSummary"]
  # On CPU mesh-tf hands its hooks to the chief; the restore hook copies the restored
  # master variables into each device's slices.
  hooks = list(spec.training_hooks) + list(spec.training_chief_hooks)
  restore_hooks = [h for h in hooks if isinstance(h, mtf.MtfRestoreHook)]
  if not restore_hooks:
    raise SystemExit("replay_routing: mesh-tf's training step has no MtfRestoreHook")
  # The saver mesh-tf's training writes checkpoints with (all global variables).
  saver = tf.get_collection(tf.GraphKeys.SAVERS)[0]
  return features, summaries, restore_hooks, saver


def routing_scalars(serialized_summaries) -> Dict[str, float]:
  """{tag: value} of the routing scalars (ROUTING_PREFIX) in serialized Summary protos."""
  import tensorflow.compat.v1 as tf

  scalars = {}
  for proto in serialized_summaries:
    for value in tf.Summary.FromString(proto).value:
      if value.tag.startswith(ROUTING_PREFIX):
        scalars[value.tag] = value.simple_value
  return scalars


def routing_at_checkpoints(estimator, model_dir: str, steps: List[int],
                           fixed: List[Batch]) -> Dict[int, Dict[str, float]]:
  """{step: {tag: mean over the fixed batches}}: each checkpoint restored into one training
  step, which is run (summaries only, no update) on every fixed batch."""
  import tensorflow.compat.v1 as tf

  results = {}
  with tf.Graph().as_default():
    features, summaries, restore_hooks, saver = build_training_step(estimator, fixed[0])
    for hook in restore_hooks:
      hook.begin()
    with tf.Session() as sess:
      for step in steps:
        saver.restore(sess, os.path.join(model_dir, f"model.ckpt-{step}"))
        for hook in restore_hooks:
          hook.after_create_session(sess, None)
        results[step] = mean_scalars([
            routing_scalars(sess.run(summaries, {features[k]: v for k, v in batch.items()}))
            for batch in fixed])
        print(f"replay_routing: step {step}: {len(results[step])} routing scalars", flush=True)
  return results


def make_replay(model_dir: str, steps: List[int], batches: int, split: str):
  """A stand-in for mesh-tf's ``utils.train_model`` that replays instead of training.

  Returns (replay function, results dict it fills: {step: {tag: value}}, and a dict it fills
  with the batch size and the batches' digest).
  """
  results: Dict[int, Dict[str, float]] = {}
  info = {}

  def replay(estimator, vocabulary, sequence_length, batch_size, train_dataset_fn,
             train_steps, ensemble_inputs, dataset_split="train", **unused):
    del train_steps, dataset_split, unused
    if ensemble_inputs:
      raise SystemExit("replay_routing: ensemble_inputs runs are not supported")
    info["batch_size"] = batch_size
    fixed = read_fixed_batches(train_dataset_fn, sequence_length, vocabulary, split,
                               batch_size, batches)
    info["batches_sha1"] = batches_digest(fixed)
    if len(fixed) < batches:
      raise SystemExit(f"replay_routing: the {split} split holds {len(fixed)} batches of "
                       f"{batch_size}, fewer than --batches {batches}")
    results.update(routing_at_checkpoints(estimator, model_dir, steps, fixed))

  return replay, results, info


def main(argv: Optional[List[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if "--" not in argv:
    raise SystemExit("replay_routing: give the run's training flags after --")
  split_at = argv.index("--")
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model_dir", required=True, help="the run whose checkpoints to replay")
  parser.add_argument("--output", required=True, help="JSON file to write (and resume)")
  parser.add_argument("--batches", type=int, default=4, help="fixed batches per checkpoint")
  parser.add_argument("--split", default="validation", help="split the batches come from")
  parser.add_argument("--steps", type=int, nargs="*", default=None,
                      help="checkpoint steps to replay (default: every checkpoint)")
  args = parser.parse_args(argv[:split_at])
  cli_flags = argv[split_at + 1:]
  if args.batches < 1:
    parser.error(f"--batches must be >= 1, got {args.batches}")
  if any(f.startswith("--model_dir") for f in cli_flags):
    parser.error("give the run's directory as replay_routing's own --model_dir, before --: "
                 "the training step is built in a scratch directory, so that nothing is "
                 "written into the run")
  available = checkpoint_steps(args.model_dir) if os.path.isdir(args.model_dir) else []
  if not available:
    parser.error(f"no checkpoints in {args.model_dir}")
  steps = available if args.steps is None else args.steps
  missing = sorted(set(steps) - set(available))
  if missing:
    parser.error(f"no checkpoint for steps {missing} in {args.model_dir} (has {available})")

  previous = read_output(args.output)
  for key, value in (("batches", args.batches), ("split", args.split)):
    if previous and previous.get(key) != value:
      parser.error(f"{args.output} was replayed with {key}={previous.get(key)!r}, not "
                   f"{value!r}: give another --output")
  done = {int(s) for s in previous.get("steps", [])}
  todo = [s for s in steps if s not in done]

  results, info = {}, {}
  if todo:
    results, info = replay_checkpoints(args.model_dir, todo, args.batches, args.split,
                                       cli_flags)

  scalars = {tag: dict(values) for tag, values in previous.get("scalars", {}).items()}
  for step, values in results.items():
    for tag, value in values.items():
      scalars.setdefault(tag, {})[str(step)] = value
  if not scalars:
    raise SystemExit(f"replay_routing: the model in {args.model_dir} wrote no routing "
                     "summaries (no Switch layer, or summaries=False)")
  record = {"model_dir": args.model_dir, "split": args.split, "batches": args.batches,
            "batch_size": info.get("batch_size", previous.get("batch_size")),
            "batches_sha1": info.get("batches_sha1", previous.get("batches_sha1")),
            "steps": sorted(done | set(results)),
            "scalars": {tag: dict(sorted(v.items(), key=lambda kv: int(kv[0])))
                        for tag, v in sorted(scalars.items())}}
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output + ".tmp", "w") as f:
    json.dump(record, f, indent=1)
  os.replace(args.output + ".tmp", args.output)
  print(f"replay_routing: {len(record['steps'])} checkpoints, {len(scalars)} scalars -> "
        f"{args.output}")
  return 0


def replay_checkpoints(model_dir: str, steps: List[int], batches: int, split: str,
                       cli_flags: List[str]):
  """Runs the command line in this process with mesh-tf's training loop replaced by a replay.

  Returns ({step: {tag: value}}, {"batch_size": b}).
  """
  from mtf_switch import compat  # noqa: F401  (before t5 / mesh_tensorflow)

  # isort: split
  from mesh_tensorflow.transformer import utils as mtf_utils

  from switch_cli.main import main as switch_mesh_transformer

  replay, results, info = make_replay(model_dir, steps, batches, split)
  original_run = mtf_utils.run

  def run_with_replay(*args, **kwargs):
    kwargs["train_model_fn"] = replay  # mesh-tf's training loop never runs
    return original_run(*args, **kwargs)

  saved_argv = sys.argv
  with tempfile.TemporaryDirectory(prefix="replay_routing_") as scratch:
    # Train mode builds the training step (its variables, microbatch loop and summaries).
    sys.argv = ["switch_mesh_transformer", f"--model_dir={scratch}", *cli_flags,
                '--gin_param=utils.run.mode = "train"']
    mtf_utils.run = run_with_replay
    try:
      code = switch_mesh_transformer()
    except SystemExit as e:  # absl's app.run ends by exiting, even on success
      code = e.code
    finally:
      sys.argv = saved_argv
      mtf_utils.run = original_run
  if code:
    raise SystemExit(code)
  if sorted(results) != sorted(steps):
    raise SystemExit(f"replay_routing: replayed steps {sorted(results)}, not {sorted(steps)}: "
                     "the command line did not reach its training step")
  return results, info
