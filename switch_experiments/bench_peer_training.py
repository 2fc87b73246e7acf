"""Training speed side by side: this project's CLI against Hugging Face's PyTorch T5 / Switch.

The peer is what a user would pick instead of this project to train a Switch model on a CPU:
``transformers``' ``T5ForConditionalGeneration`` (dense) and
``SwitchTransformersForConditionalGeneration`` (Switch) on torch's CPU kernels. Both sides
train the same tiny sizes, with the same tokens per step and the same optimizer:

  d_model 128, d_ff 512, 4 heads of 32, 2 encoder + 2 decoder layers, vocabulary 8192,
  32 sequences of 128 inputs and 32 targets per step, Adafactor at a constant lr 0.01;
  Switch: 8 experts in every other FFN (the second of each stack), capacity factor 1.25,
  jitter noise 0.01, load-balancing loss 0.01.

What each side's step includes (the comparison is of a user's training loop, not of kernels):
  project  ``switch_mesh_transformer`` with models/t5_tiny.gin or models/switch_tiny.gin and
           gin/mesh/cpu_data_parallel.gin, run through tools/profile_train_step.py: the
           Estimator loop with its hooks, logging and summaries, and its tf.data input pipeline
           (span corruption of the pydocs corpus, tokenised on the fly, padded to 128 / 32),
           sharing the same 2 cores. Step time: one step's start to the next's.
  peer     an eager PyTorch loop: forward with labels (the loss; Switch adds its router
           losses), backward, ``transformers.optimization.Adafactor`` step (scale_parameter,
           no relative step, lr 0.01), zero_grad. Its batch is one tensor of random token ids
           made before the loop (no DataLoader, no tokeniser, no padding), so the peer pays
           nothing for input. torch runs with 2 intra-op threads. Switch routes per sequence
           with an absolute capacity: 20 slots per expert = 128 tokens x 1.25 / 8 (the
           project routes groups of 1024 tokens with 160 slots: the same factor).

Beside wall time, each step's CPU seconds (the process's, every thread) are reported, and the
project / peer ratio by them ("by cpu seconds": the peer's CPU seconds per step over the
project's). On a busy machine the wall-time ratio is not a fair comparison: torch's OpenMP
workers wait for each other at every parallel region, so a descheduled worker stalls the rest
(one round under load average 5-8: the peer's dense step took 8.4 s, the project's 0.9 s;
issue 27's quiet figures are 0.27 and 0.32 s), and they spin while they wait. Run
it on a quiet machine; under load, --threads 1 on both sides and the CPU-seconds ratio are the
least distorted figures, and still only indicative.

Each (side, model) runs in its own process, in rounds whose order rotates from round to round,
so that a change in machine load falls on all of them alike. Each process also times a dense
float32 [2048, 512] x [512, 2048] matmul in its own framework (TensorFlow for the project, torch
for the peer): the cores' speed as that process saw it. Reported per (side, model): median step
seconds, steps/s, examples/s, the reference matmul's GFLOP/s; then project / peer for dense and
for Switch, and each side's Switch / its dense. Prints a markdown table and a JSON line.

  PYTHONPATH=. python tools/bench_peer_training.py              # ~6 min on a quiet 2-core CPU
  PYTHONPATH=. python tools/bench_peer_training.py --rounds 1 --timed_steps 15   # ~2 min

The peer alone (one process, prints its JSON record):
  python tools/bench_peer_training.py --peer_worker switch --timed_steps 10
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from switch_experiments import bench_rounds, paths
from switch_experiments.paths import REPO

MODELS = ("dense", "switch")
SIDES = ("project", "peer")

# The tiny sizes of models/t5_tiny.gin and models/switch_tiny.gin.
VOCABULARY = 8192
D_MODEL, D_FF, D_KV, HEADS, LAYERS = 128, 512, 32, 4, 2
INPUT_LENGTH, TARGET_LENGTH = 128, 32
EXPERTS, CAPACITY_FACTOR, JITTER, AUX_LOSS = 8, 1.25, 0.01, 0.01
LEARNING_RATE = 0.01


def peer_expert_capacity() -> int:
  """Slots per expert per sequence in the peer (it routes each sequence alone)."""
  return int(INPUT_LENGTH * CAPACITY_FACTOR / EXPERTS)


def build_peer_model(model: str):
  """The peer's model at the tiny sizes, in training mode, no dropout."""
  import transformers

  common = dict(vocab_size=VOCABULARY, d_model=D_MODEL, d_ff=D_FF, d_kv=D_KV, num_heads=HEADS,
                num_layers=LAYERS, num_decoder_layers=LAYERS, dropout_rate=0.0,
                decoder_start_token_id=0, pad_token_id=0)
  if model == "dense":
    config = transformers.T5Config(feed_forward_proj="relu", **common)
    net = transformers.T5ForConditionalGeneration(config)
  elif model == "switch":
    # One sparse layer per stack: sparse_step 2 puts it second, as switch_tiny.gin does.
    config = transformers.SwitchTransformersConfig(
        num_experts=EXPERTS, expert_capacity=peer_expert_capacity(),
        num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
        router_jitter_noise=JITTER, router_aux_loss_coef=AUX_LOSS, router_z_loss_coef=0.0,
        **common)
    net = transformers.SwitchTransformersForConditionalGeneration(config)
  else:
    raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
  net.train()
  return net


def torch_matmul_gflops(n: int = 2048, k: int = 512, rounds: int = 20) -> float:
  """GFLOP/s of a float32 [n, k] x [k, 4k] torch matmul in this process."""
  import torch

  generator = torch.Generator().manual_seed(0)
  a = torch.randn(n, k, generator=generator)
  b = torch.randn(k, 4 * k, generator=generator)
  torch.matmul(a, b)
  start = time.perf_counter()
  for _ in range(rounds):
    torch.matmul(a, b)
  return 2 * n * k * 4 * k / ((time.perf_counter() - start) / rounds) / 1e9


def run_peer(model: str, batch_size: int, warmup_steps: int, timed_steps: int,
             threads: int) -> dict:
  """Trains the peer for warmup + timed steps in this process; its JSON record."""
  import torch
  from transformers.optimization import Adafactor

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  net = build_peer_model(model)
  optimizer = Adafactor(net.parameters(), lr=LEARNING_RATE, scale_parameter=True,
                        relative_step=False, warmup_init=False)
  # Token ids 1..vocab-1: 0 is padding, which T5 would mask out of the loss.
  inputs = torch.randint(1, VOCABULARY, (batch_size, INPUT_LENGTH))
  labels = torch.randint(1, VOCABULARY, (batch_size, TARGET_LENGTH))
  # Switch adds its router losses only when forward is asked for the router logits.
  extra = {"output_router_logits": True} if model == "switch" else {}
  step_seconds, cpu_seconds, losses = [], [], []
  last = last_cpu = None
  for step in range(warmup_steps + timed_steps + 1):
    start, cpu = time.perf_counter(), time.process_time()
    if step > warmup_steps:
      step_seconds.append(start - last)
      cpu_seconds.append(cpu - last_cpu)
    last, last_cpu = start, cpu
    if step == warmup_steps + timed_steps:
      break
    loss = net(input_ids=inputs, labels=labels, **extra).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    losses.append(float(loss.detach()))
  return {"side": "peer", "model": model,
          "loop_step_seconds": round(statistics.median(step_seconds), 4),
          "loop_cpu_seconds": round(statistics.median(cpu_seconds), 4),
          "reference_matmul_gflops": round(torch_matmul_gflops(), 1),
          "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
          "parameters": sum(p.numel() for p in net.parameters()),
          "threads": torch.get_num_threads(), "torch": torch.__version__}


def run_side(side: str, model: str, args) -> dict:
  """One training process of one side; its record, or {"error": ...}."""
  if side == "project":
    from switch_experiments import bench_cli_training

    # TensorFlow reads these when the session config leaves the pools' sizes at 0, as
    # mesh-tf's CPU RunConfig does; on a 2-core machine its default is 2 and 2.
    threads = {"TF_NUM_INTRAOP_THREADS": str(args.threads),
               "TF_NUM_INTEROP_THREADS": str(args.threads)}
    record = bench_cli_training.run_variant(model, "default", args, extra_env=threads)
    record.setdefault("side", "project")
    return record
  command = [sys.executable, paths.tool("bench_peer_training"), f"--peer_worker={model}",
             f"--batch_size={args.batch_size}", f"--warmup_steps={args.warmup_steps}",
             f"--timed_steps={args.timed_steps}", f"--threads={args.threads}"]
  proc = subprocess.run(command, cwd=REPO, env=paths.child_env(), capture_output=True, text=True)
  records = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode or not records:
    return {"error": f"exit {proc.returncode}: ...{(proc.stdout + proc.stderr)[-600:]}"}
  return json.loads(records[-1])


def summarize(samples: dict, batch_size: int) -> tuple:
  """Rows per (side, model) from the rounds' records, and the ratios between them."""
  rows = {}
  for (side, model), records in samples.items():
    good = [r for r in records if "error" not in r]
    if not good:
      rows[(side, model)] = {"side": side, "model": model, "error": records[-1]["error"][:300]}
      continue
    step = statistics.median(r["loop_step_seconds"] for r in good)
    rows[(side, model)] = {
        "side": side, "model": model, "step_seconds": round(step, 4),
        "steps_per_second": round(1 / step, 3),
        "examples_per_second": round(batch_size / step, 1),
        "cpu_seconds_per_step": statistics.median(r["loop_cpu_seconds"] for r in good),
        "reference_matmul_gflops": statistics.median(r["reference_matmul_gflops"] for r in good),
        "spread_seconds": [r["loop_step_seconds"] for r in good]}
  ratios = {}

  def rate(side, model, key="examples_per_second"):
    row = rows.get((side, model))
    return row[key] if row and "error" not in row else None

  for model in MODELS:
    project, peer = rate("project", model), rate("peer", model)
    if project and peer:
      ratios[f"project_over_peer_{model}"] = round(project / peer, 3)
    project_cpu = rate("project", model, "cpu_seconds_per_step")
    peer_cpu = rate("peer", model, "cpu_seconds_per_step")
    if project_cpu and peer_cpu:
      ratios[f"project_over_peer_{model}_by_cpu_seconds"] = round(peer_cpu / project_cpu, 3)
  for side in SIDES:
    switch, dense = rate(side, "switch"), rate(side, "dense")
    if switch and dense:
      ratios[f"{side}_switch_over_dense"] = round(switch / dense, 3)
  return list(rows.values()), ratios


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="dense,switch")
  parser.add_argument("--sides", default="project,peer")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--warmup_steps", type=int, default=15)
  parser.add_argument("--timed_steps", type=int, default=40)
  parser.add_argument("--batch_size", type=int, default=32, help="sequences per step")
  parser.add_argument("--threads", type=int, default=2,
                      help="torch's intra-op threads; TensorFlow's intra- and inter-op pools")
  parser.add_argument("--task", default="switch_pydocs_span_corruption",
                      help="the project side's training task")
  parser.add_argument("--peer_worker", choices=MODELS, default=None,
                      help="internal: train only the peer's MODEL in this process")
  args = parser.parse_args(argv)
  for name in ("rounds", "warmup_steps", "timed_steps", "batch_size", "threads"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  models, sides = args.models.split(","), args.sides.split(",")
  for model in models:
    if model not in MODELS:
      parser.error(f"--models: unknown model {model!r}; expected some of {MODELS}")
  for side in sides:
    if side not in SIDES:
      parser.error(f"--sides: unknown side {side!r}; expected some of {SIDES}")
  if args.peer_worker:
    print(json.dumps(run_peer(args.peer_worker, args.batch_size, args.warmup_steps,
                              args.timed_steps, args.threads)))
    return 0

  runs = [(side, model) for model in models for side in sides]
  samples = bench_rounds.run_rounds(
      runs, args.rounds, lambda side, model: run_side(side, model, args),
      lambda r: (f"{r['loop_step_seconds']:.3f} s/step ({r['loop_cpu_seconds']:.3f} CPU s), "
                 f"reference matmul {r['reference_matmul_gflops']:.0f} GFLOP/s"))
  rows, ratios = summarize(samples, args.batch_size)

  print(f"\n{args.batch_size} sequences of {INPUT_LENGTH} + {TARGET_LENGTH} tokens per step, "
        f"{args.timed_steps} timed steps after {args.warmup_steps} warm-up, {args.rounds} rounds; "
        f"{platform.processor() or 'cpu'}, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end\n")
  print(bench_rounds.markdown_table(
      ["side", "model", "s/step", "steps/s", "examples/s", "CPU s/step", "ref. matmul GFLOP/s",
       "step s per round"],
      rows, ("side", "model"), lambda r: [
          f"{r['step_seconds']:.3f}", f"{r['steps_per_second']:.2f}",
          f"{r['examples_per_second']:.1f}", f"{r['cpu_seconds_per_step']:.3f}",
          f"{r['reference_matmul_gflops']:.0f}",
          ", ".join(f"{s:.3f}" for s in r["spread_seconds"])]))
  print()
  for name, value in ratios.items():
    print(f"{name.replace('_', ' ')}: {value:.3f}x")
  print(json.dumps({"batch_size": args.batch_size, "timed_steps": args.timed_steps,
                    "warmup_steps": args.warmup_steps, "rounds": args.rounds,
                    "threads": args.threads,
                    "load_average": os.getloadavg(), "rows": rows, "ratios": ratios}))
  return 0
