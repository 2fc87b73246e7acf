"""Train a tiny Switch model and its FLOP-matched dense twin, then compare their quality.

The README's main command. Both models are trained with the same data, steps and batch through
``switch_mesh_transformer`` (t5_mesh_transformer with this project's layers and tasks), then
evaluated on the task's validation split; the script prints their negative log perplexity
side by side, as a markdown table and a JSON line.

    python tools/switch_vs_dense.py                      # embedded default corpus, CPU
    python tools/switch_vs_dense.py --steps 2000 --task switch_pydocs_span_corruption
    python tools/switch_vs_dense.py --full_comparison    # the committed expert-scaling run

``--full_comparison`` runs tools/repro_expert_scaling.py with its committed sizes instead
(dense and Switch with 4, 16 and 64 experts, several seeds, on the shared documentation
corpus; hours on a 2-core CPU, resumable); arguments after it go to that script.

Reruns resume: each model's directory keeps its checkpoints, and a finished model is not
retrained (delete ``--output_dir`` to start over). ``--seed`` (default 1) fixes both models'
initial weights and their training data order and span noise, so a rerun on the same machine
prints the same table; unseeded, two runs of the same code differed by 0.024 nats.
"""

import argparse
import json
import os
import re
import sys
import time

import cli_runs

REPO = cli_runs.REPO
DEFAULT_TASK = "switch_default_corpus_span_corruption"
MODELS = {
    "switch": "models/switch_tiny.gin",
    "dense": "models/t5_tiny.gin",
}
CPU_MESH = "mesh/cpu_data_parallel.gin"  # gin paths resolve against the project gin/ dir
FULL_COMPARISON = "--full_comparison"


def _positive_int(text: str) -> int:
  """argparse type: an integer >= 1 (0 or fewer steps would start the CLI for nothing)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
  return value


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--task", default=DEFAULT_TASK, help="seqio task or mixture to train on")
  parser.add_argument("--steps", type=_positive_int, default=200,
                      help="training steps per model")
  parser.add_argument("--checkpoint_every", type=_positive_int, default=100)
  parser.add_argument("--eval_batches", type=_positive_int, default=20,
                      help="validation batches for the perplexity evaluation")
  parser.add_argument("--output_dir", default=os.path.join(REPO, "runs", "switch_vs_dense"))
  parser.add_argument("--seed", type=int, default=1,
                      help="seed of the initial weights and of the training data order")
  parser.add_argument("--gin_param", action="append", default=[],
                      help="extra gin bindings for both models")
  parser.add_argument(FULL_COMPARISON, action="store_true",
                      help="run the committed expert-scaling comparison instead "
                           "(tools/repro_expert_scaling.py; later arguments go to it)")
  return parser


def train_and_evaluate(name: str, gin_file: str, flags) -> dict:
  """Trains one model to flags.steps (resuming), evaluates it; returns its figures."""
  model_dir = os.path.join(flags.output_dir, name)
  common = [f'MIXTURE_NAME = "{flags.task}"', *flags.gin_param]
  gin_files = [gin_file, CPU_MESH]
  seeds = [f"mesh_train_dataset_fn.seed = {flags.seed}", f"mtf_switch.init_seed.seed = {flags.seed}",
           # A resumed model skips the batches it has seen instead of replaying the stream.
           "utils.run.skip_seen_data = True"]
  started = time.time()
  # The label names the run's log file ({label}.log beside model_dir): no "/" in it.
  label = f"{name}-{os.path.splitext(os.path.basename(gin_file))[0]}"
  cli_runs.train(model_dir, gin_files, common + seeds, flags.steps, flags.checkpoint_every,
                 label)
  train_seconds = time.time() - started
  print(f"evaluating {name} on the validation split", flush=True)
  log = cli_runs.run_cli(model_dir, gin_files,
                         common + ['utils.run.mode = "perplexity_eval"',
                                   'utils.run.dataset_split = "validation"',
                                   f"utils.run.eval_checkpoint_step = {flags.steps}",
                                   f"utils.run.perplexity_eval_steps = {flags.eval_batches}"],
                         f"eval-{name}")
  found = re.findall(r"neg_log_perplexity = (-?[0-9.]+)", log)
  if not found:
    raise SystemExit(f"{name}: no neg_log_perplexity in the evaluation log")
  return {"model": name, "gin": gin_file, "steps": flags.steps,
          "neg_log_perplexity": float(found[-1]), "train_seconds": round(train_seconds, 1)}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if FULL_COMPARISON in argv:
    import repro_expert_scaling  # a sibling module, imported only when asked for

    return repro_expert_scaling.main([a for a in argv if a != FULL_COMPARISON])
  flags = _parser().parse_args(argv)
  results = [train_and_evaluate(name, gin, flags) for name, gin in MODELS.items()]
  print()
  print(f"| model | steps | eval neg log perplexity ({flags.task}, validation) | train s |")
  print("| --- | --- | --- | --- |")
  for r in results:
    print(f"| {r['model']} | {r['steps']} | {r['neg_log_perplexity']:.4f} | "
          f"{r['train_seconds']:.0f} |")
  print(json.dumps({"task": flags.task, "results": results}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
