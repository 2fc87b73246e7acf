"""The "what ran" section every reproduction's markdown carries: command, machine, sizes."""

import datetime
import os
import platform
from typing import Optional

from switch_experiments.repro_settings import EVAL_SEED


def machine_description(with_load: bool = True) -> str:
  """CPU model, cores, memory and load, so a reader can scale the timings to their machine."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = names[0] if names else cpu
  except OSError:
    pass
  memory = ""
  try:
    with open("/proc/meminfo") as f:
      kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    memory = f", {kib / 2**20:.0f} GiB RAM"
  except (OSError, StopIteration):
    pass
  if not with_load:
    return f"{os.cpu_count()} x {cpu}{memory}"
  load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
  return f"{os.cpu_count()} x {cpu}{memory}{load} (at the end of the run)"


def run_description(settings: dict, command: str, wall_seconds: float, sizes: str,
                    curves: Optional[dict] = None) -> str:
  """The 'what was run' section every results markdown carries."""
  tokens = settings["steps"] * settings["batch_size"]
  trained = sum((c[-1]["train_seconds"] or 0.0) for c in (curves or {}).values() if c)
  now = datetime.datetime.now(datetime.timezone.utc)
  return "\n".join([
      "## What ran",
      "",
      f"* command: `{command}`",
      *([f"* report written {now:%Y-%m-%d %H:%M} UTC by `--report_only` from models trained "
         f"earlier; training seconds summed over the {len(curves or {})} models reported: "
         f"{trained / 60:.1f} min (start-up and evaluation excluded)",
         f"* machine the report was written on: {machine_description(with_load=False)}"]
        if settings.get("report_only") else
        [f"* finished {now:%Y-%m-%d %H:%M} UTC; this invocation took {wall_seconds / 60:.1f} min "
         f"(models already trained or evaluated by an earlier invocation are not counted); "
         f"training seconds summed over the {len(curves or {})} models reported: "
         f"{trained / 60:.1f} min (start-up and evaluation excluded)",
         f"* machine: {machine_description()}"]),
      f"* task: `{settings['task']}` (training split; evaluation on its validation split, every "
      f"20th line of the text)",
      f"* training: {settings['steps']} steps x {settings['batch_size']} sequences "
      f"= {tokens} sequences per model, same data order for every model "
      f"(data seed {settings['data_seed']}); checkpoint and evaluation every "
      f"{settings['checkpoint_every']} steps",
      f"* evaluation: {settings['eval_batches']} batches x {settings['batch_size']} validation "
      f"sequences, the same ones for every model and checkpoint (seed {EVAL_SEED}); metric: "
      f"negative log perplexity per target token (t5's `neg_log_perplexity`, higher is better)",
      f"* sizes: {sizes}",
      f"* extra gin files: {settings['gin_file'] or 'none'}; extra gin bindings: "
      f"{settings['gin_param'] or 'none'}",
      "* model initialisation: each model's graph seed is its data seed "
      "(`mtf_switch.init_seed`), so rerunning a model starts it from the same weights",
  ])
