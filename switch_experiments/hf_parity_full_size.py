"""Full-size check of the HF import: google/switch-base-8's exact config, random weights.

    python tools/hf_parity_full_size.py [--work_dir /tmp/hf_full] [--batch 2] \\
        [--inputs_length 128 --targets_length 32]

1. builds SwitchTransformersForConditionalGeneration with switch-base-8's config.json
   (mtf_switch/convert/released.py; ~619M parameters), randomly initialised, dropout off,
   saves it with save_pretrained (safetensors) and computes HF's logits on one batch;
2. imports it with ``python -m mtf_switch.convert from-hf`` in a child process, timing it and
   reading the child's peak resident memory (getrusage RUSAGE_CHILDREN);
3. runs the project's Mesh-TF model from the generated gin + checkpoint on the same batch
   and prints the largest logit difference (target: < 1e-3) as markdown and a JSON line.
The machine's load average is printed too: the times are only as good as the machine's
quietness.
"""

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

from switch_experiments.paths import REPO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--work_dir", default="/tmp/hf_parity_full_size")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--inputs_length", type=int, default=128)
  parser.add_argument("--targets_length", type=int, default=32)
  parser.add_argument("--seed", type=int, default=0)
  flags = parser.parse_args(argv)
  import torch
  from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

  from mtf_switch.convert import released
  from switch_experiments import hf_tiny

  shutil.rmtree(flags.work_dir, ignore_errors=True)
  hf_dir, out_dir = (os.path.join(flags.work_dir, n) for n in ("hf", "mtf"))
  config = {k: v for k, v in released.RELEASED["switch_base_8"].items() if k != "model_type"}
  torch.manual_seed(flags.seed)
  start = time.time()
  model = SwitchTransformersForConditionalGeneration(
      SwitchTransformersConfig(**config, dropout_rate=0.0)).eval()
  params = sum(p.numel() for p in model.parameters())
  model.save_pretrained(hf_dir)
  rng = np.random.RandomState(flags.seed)
  inputs = rng.randint(2, 32000, (flags.batch, flags.inputs_length)).astype(np.int32)
  targets = rng.randint(2, 32000, (flags.batch, flags.targets_length)).astype(np.int32)
  reference = hf_tiny.hf_run(model, inputs, targets)
  hf_seconds = time.time() - start
  dropped = sum(int((r.kept == 0).sum()) for r in reference.routing)
  del model
  gc.collect()
  print(f"HF model: {params / 1e6:.1f}M parameters, saved and run in {hf_seconds:.0f} s",
        flush=True)

  start = time.time()
  subprocess.run([sys.executable, "-m", "mtf_switch.convert", "from-hf", hf_dir,
                  "--output_dir", out_dir, "--inputs_length", str(flags.inputs_length),
                  "--targets_length", str(flags.targets_length)], check=True, cwd=REPO)
  convert_seconds = time.time() - start
  # ru_maxrss of the largest waited-for child, in KiB on Linux: the import alone.
  convert_peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

  from mtf_switch.convert import mtf_run
  start = time.time()
  run = mtf_run.run_logits([os.path.join(out_dir, "model.gin")],
                           os.path.join(out_dir, "model.ckpt-0"), inputs, targets,
                           config["vocab_size"])
  mtf_seconds = time.time() - start
  diff = float(np.abs(run.logits - reference.logits).max())
  kept_equal = all(np.array_equal(ours["kept"], theirs.kept) for ours, theirs in
                   zip(run.routing.values(), reference.routing, strict=True))
  record = {"parameters": params, "batch": flags.batch, "inputs_length": flags.inputs_length,
            "targets_length": flags.targets_length, "max_abs_logit_diff": diff,
            "within_1e-3": diff < 1e-3, "routing_kept_equal": kept_equal,
            "hf_dropped_tokens": dropped, "convert_seconds": round(convert_seconds, 1),
            "convert_peak_rss_mib": round(convert_peak_mib), "mtf_run_seconds": round(mtf_seconds),
            "load_average": os.getloadavg()}
  print("| parameters | max abs logit diff | conversion s | conversion peak RSS MiB | "
        "Mesh-TF run s | load average |")
  print("| --- | --- | --- | --- | --- | --- |")
  print(f"| {params / 1e6:.1f}M | {diff:.3g} | {convert_seconds:.0f} | {convert_peak_mib:.0f} | "
        f"{mtf_seconds:.0f} | {', '.join(f'{x:.1f}' for x in os.getloadavg())} |")
  print(json.dumps(record))
  return 0 if diff < 1e-3 and kept_equal else 1
