"""Training speed of the tiny dense and Switch models through ``switch_mesh_transformer``.

For each variant, one command-line training run (``tools/profile_train_step.py``: the user's
command line, in its own process) warms up, times ``--timed_steps`` steps without tracing,
then traces one step to count the matmul FLOPs actually executed. A step's time is the
training loop's (one step's start to the next's: session.run plus hooks, logging and Python),
beside session.run alone. Variants run in rounds,
in an order that rotates from round to round, so that a change in machine load falls on all
of them alike; each process also times a dense [2048, 512] x [512, 2048] matmul, the cores'
reference. Reported per variant: median step seconds, steps/s, examples/s, executed matmul
GFLOP per step, achieved GFLOP/s, and examples/s relative to the first variant of its model and to dense.
Prints a markdown table and a JSON line.

  PYTHONPATH=. python tools/bench_cli_training.py               # ~10 min on a quiet 2-core CPU
  PYTHONPATH=. python tools/bench_cli_training.py --with_xla    # also XLA auto-clustering

Variants:
  one_hot_embedding   Mesh-TF's stock VocabEmbedding (one-hot einsum lookups): the speed of
                      every committed run before mtf_switch.GatherVocabEmbedding existed
  default             the model's gin as committed (index lookups)
  xla                 default with TF_XLA_FLAGS="--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"
  one_microbatch      the whole step in one pass, without Mesh-TF's microbatch while-loop
                      (its defaults.gin splits a step at 2048 tokens per microbatch)
  onednn_off          default with TF_ENABLE_ONEDNN_OPTS=0: TensorFlow's own kernels (the
                      command sets 1 unless the user set it)
  mesh_tf_attention   default with mesh-tf's own attention (SWITCH_ATTENTION_LAYOUT=mesh_tf),
                      not the heads-major one the command installs
  A+B                 step variants together, e.g. one_microbatch+onednn_off
  packed              Switch only: the experts run on the filled capacity slots only
                      (mtf_switch.SwitchFFN.skip_empty_slots = True, packed_experts)
  all_slots           Switch only: the experts run on every capacity slot
                      (skip_empty_slots = False); "auto", the default, picks this for experts
                      as small as switch_tiny's, as batched matmuls over the slots
  mesh_tf_experts     Switch only: every slot, as Mesh-TF's einsums rather than batched
                      matmuls (mtf_switch.SwitchFFN.batch_expert_slots = False)
  einsum_dispatch     Switch only: the paper's one-hot dispatch and combine einsums
                      (mtf_switch.SwitchFFN.dispatch_path = "einsum")

  PYTHONPATH=. python tools/bench_cli_training.py --models switch \
      --variants default,packed,all_slots,einsum_dispatch
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from switch_experiments import bench_rounds, paths
from switch_experiments.paths import REPO

MODELS = {"dense": "models/t5_tiny.gin", "switch": "models/switch_tiny.gin"}
ONE_HOT = "transformer.get_vocab_embedding_cls.cls = @transformer.VocabEmbedding"
XLA_FLAGS = "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"
# Variants that only change a Switch layer: the gin binding each adds.
SWITCH_VARIANTS = {"packed": "mtf_switch.SwitchFFN.skip_empty_slots = True",
                   "all_slots": "mtf_switch.SwitchFFN.skip_empty_slots = False",
                   "mesh_tf_experts": "mtf_switch.SwitchFFN.batch_expert_slots = False",
                   "einsum_dispatch": 'mtf_switch.SwitchFFN.dispatch_path = "einsum"'}
# Variants for either model: a gin binding, or environment variables, added to the default.
STEP_VARIANTS = {
    # The whole step at once instead of Mesh-TF's default microbatch loop
    # (defaults.gin: 2048 tokens per microbatch, so 2 microbatches of 16 sequences here).
    "one_microbatch": ("utils.serialize_num_microbatches.tokens_per_microbatch_per_replica "
                       "= None", {}),
    # Without oneDNN's kernels, which the command turns on (switch_cli) and TensorFlow 2.15
    # alone leaves off on this project's AMD CPU.
    "onednn_off": (None, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    # Mesh-tf's own attention instead of the heads-major one the command installs
    # (mtf_switch.attention_layout).
    "mesh_tf_attention": (None, {"SWITCH_ATTENTION_LAYOUT": "mesh_tf"}),
    # One inter-op thread instead of TensorFlow's default (one per core): independent ops run
    # one at a time, each still on the intra-op pool. Measured 16-21% slower on 2 cores
    # (docs/performance.md, 2026-12-05), so the command keeps the default.
    "inter_op_1": (None, {"TF_NUM_INTEROP_THREADS": "1"}),
}
VARIANTS = ("one_hot_embedding", "default", "xla", *SWITCH_VARIANTS, *STEP_VARIANTS)


def run_variant(model: str, variant: str, args, extra_env=None) -> dict:
  """One training process (``extra_env`` added to its environment); returns
  profile_train_step's JSON record."""
  command = [sys.executable, paths.tool("profile_train_step"),
             f"--gin_file={MODELS[model]}", "--gin_file=mesh/cpu_data_parallel.gin",
             f"--task={args.task}", f"--warmup_steps={args.warmup_steps}",
             f"--timed_steps={args.timed_steps}", "--traced_steps=1",
             f'--gin_param=utils.run.batch_size = ("sequences_per_batch", {args.batch_size})']
  env = paths.child_env(TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
  if variant == "one_hot_embedding":
    command.append(f"--gin_param={ONE_HOT}")
  if variant == "xla":
    env["TF_XLA_FLAGS"] = XLA_FLAGS
  if variant in SWITCH_VARIANTS:
    command.append(f"--gin_param={SWITCH_VARIANTS[variant]}")
  for part in variant.split("+"):  # step variants combine: "one_microbatch+onednn"
    if part in STEP_VARIANTS:
      binding, variables = STEP_VARIANTS[part]
      if binding:
        command.append(f"--gin_param={binding}")
      env.update(variables)
  with tempfile.TemporaryDirectory(prefix=f"bench_{model}_{variant}_") as model_dir:
    command.append(f"--model_dir={model_dir}")
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
  records = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not records:
    tail = (proc.stdout + proc.stderr)[-3000:]
    return {"error": f"exit {proc.returncode}: ...{tail[-600:]}"}
  return json.loads(records[-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="dense,switch")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--warmup_steps", type=int, default=15)
  parser.add_argument("--timed_steps", type=int, default=40)
  parser.add_argument("--batch_size", type=int, default=32, help="sequences per step")
  parser.add_argument("--task", default="switch_pydocs_span_corruption")
  parser.add_argument("--with_xla", action="store_true", help="add the xla variant")
  parser.add_argument("--variants", default="one_hot_embedding,default",
                      help=f"comma-separated, some of {', '.join(VARIANTS)}; the first is "
                           "each model's baseline")
  args = parser.parse_args(argv)
  models = args.models.split(",")
  for model in models:
    if model not in MODELS:
      parser.error(f"--models: unknown model {model!r}; expected some of {sorted(MODELS)}")
  for name in ("rounds", "warmup_steps", "timed_steps", "batch_size"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  variants = args.variants.split(",") + (["xla"] if args.with_xla else [])
  for variant in variants:
    if variant not in VARIANTS and not all(p in STEP_VARIANTS for p in variant.split("+")):
      parser.error(f"--variants: unknown variant {variant!r}; expected some of {VARIANTS}, "
                   f"or step variants joined by '+' ({'+'.join(STEP_VARIANTS)})")
  runs = [(m, v) for m in models for v in variants
          if m == "switch" or v not in SWITCH_VARIANTS]

  samples = bench_rounds.run_rounds(
      runs, args.rounds, lambda model, variant: run_variant(model, variant, args),
      lambda r: (f"{r['loop_step_seconds']:.3f} s/step ({r['untraced_step_seconds']:.3f} "
                 "in session.run)"))

  rows = []
  for model, variant in runs:
    good = [r for r in samples[(model, variant)] if "error" not in r]
    if not good:
      rows.append({"model": model, "variant": variant,
                   "error": samples[(model, variant)][-1]["error"][:300]})
      continue
    session = statistics.median(r["untraced_step_seconds"] for r in good)
    step = statistics.median(r["loop_step_seconds"] for r in good)
    gflop = statistics.median(r["matmul_gflop_per_step"] for r in good)
    reference = statistics.median(r["reference_matmul_gflops"] for r in good)
    rows.append({"model": model, "variant": variant, "step_seconds": round(step, 4),
                 "session_run_seconds": round(session, 4),
                 "steps_per_second": round(1 / step, 3),
                 "examples_per_second": round(args.batch_size / step, 1),
                 "cpu_seconds_per_step": statistics.median(
                     r.get("loop_cpu_seconds") or float("nan") for r in good),
                 "matmul_gflop_per_step": gflop, "achieved_gflops": round(gflop / step, 1),
                 "reference_matmul_gflops": reference,
                 "spread_seconds": [r["loop_step_seconds"] for r in good]})
  baseline = {r["model"]: r for r in rows if r["variant"] == variants[0] and "error" not in r}
  for row in rows:
    base = baseline.get(row["model"])
    if base and "error" not in row:
      row["examples_per_second_vs_first_variant"] = round(
          row["examples_per_second"] / base["examples_per_second"], 3)
  dense_default = next((r for r in rows if r["model"] == "dense" and r["variant"] == "default"
                        and "error" not in r), None)
  for row in rows:
    if dense_default and "error" not in row:
      row["examples_per_second_vs_dense"] = round(
          row["examples_per_second"] / dense_default["examples_per_second"], 3)

  print(f"\n{args.batch_size} sequences per step, {args.timed_steps} timed steps after "
        f"{args.warmup_steps} warm-up, {args.rounds} rounds; {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores\n")
  print(bench_rounds.markdown_table(
      ["model", "variant", "s/step", "session.run s", "CPU s/step", "steps/s", "examples/s",
       f"x {variants[0]}", "x dense", "matmul GFLOP/step", "GFLOP/s", "ref. matmul GFLOP/s"],
      rows, ("model", "variant"), lambda r: [
          f"{r['step_seconds']:.3f}", f"{r['session_run_seconds']:.3f}",
          f"{r['cpu_seconds_per_step']:.3f}", f"{r['steps_per_second']:.2f}",
          f"{r['examples_per_second']:.1f}",
          str(r.get("examples_per_second_vs_first_variant", "")),
          str(r.get("examples_per_second_vs_dense", "")), f"{r['matmul_gflop_per_step']:.2f}",
          f"{r['achieved_gflops']:.1f}", f"{r['reference_matmul_gflops']:.1f}"]))
  print(json.dumps({"batch_size": args.batch_size, "timed_steps": args.timed_steps,
                    "rounds": args.rounds, "rows": rows}))
  return 0
