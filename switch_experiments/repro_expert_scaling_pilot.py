"""Pilot of the expert-scaling run: which design shows the Switch advantage soonest on a CPU.

Each candidate design of tools/repro_expert_scaling.py (DESIGNS there) trains its dense model
and its 16-expert Switch twin for the same short budget (designs with the same dense model
share it), on the same data order. The full run then uses the design chosen here by a rule
fixed before the pilot ran (RULE below), from the measured curves only.

    python tools/repro_expert_scaling_pilot.py            # the committed pilot (~40 min)
"""

import os
import time

from switch_experiments import paths, repro_curves, repro_main, repro_report
from switch_experiments import repro_expert_scaling as scaling
from switch_experiments import repro_outputs as outputs

SCRIPT = "repro_expert_scaling_pilot"
PILOT_DESIGNS = ("paper", "every_ffn", "rsqrt_lr", "decoder_lm")
PILOT_EXPERTS = 16
RULE = (
    "Rule, fixed before the pilot ran: the full run uses the design whose 16-expert model has "
    "the largest interpolated step speed-up at the pilot's last checkpoint (dense final step "
    "/ the step at which the Switch curve reaches the dense final quality); if no Switch "
    "model reaches its dense model's final quality, the largest final gap (Switch - dense) "
    "decides. Speed-ups within 0.05 of each other count as a tie, broken by the cheaper "
    "Switch model (CPU seconds per step), since the full run's budget is machine time.")
DEFAULT_SIZES = {"steps": 600, "checkpoint_every": 100, "batch_size": 32, "eval_batches": 16}


def pilot_variants(flags) -> list:
  """Dense + Switch per design; a dense model shared by designs is trained once."""
  variants, dense_of = [], {}
  for name in flags.designs:
    design = scaling.DESIGNS[name]
    task = scaling.task_for(design.objective, flags.base_task)
    dense, switch = scaling.model_variants(design, [flags.experts], task=task,
                                           prefix=f"{name}.")
    key = (dense.gin_files, dense.gin_params)
    if key in dense_of:
      dense_of[name] = dense_of[key]
    else:
      dense_of[key] = dense_of[name] = dense.name
      variants.append(dense)
    variants.append(switch)
  flags.dense_of = {n: dense_of[n] for n in flags.designs}
  return variants


def design_pairs(curves: dict, flags):
  """(design, dense curve, switch curve) for each design whose two models both finished."""
  for name in flags.designs:
    dense = curves.get(flags.dense_of[name])
    switch = curves.get(f"{name}.switch_{flags.experts}")
    if dense and switch:
      yield name, dense, switch


def design_rows(curves: dict, flags) -> list:
  rows = []
  for name, dense, switch in design_pairs(curves, flags):
    target = repro_curves.final_quality(dense)
    reached = repro_curves.step_reaching(switch, target)
    step_speedup = dense[-1]["step"] / reached if reached else None
    dense_cpu = scaling.per_step(dense, "cpu_seconds")
    switch_cpu = scaling.per_step(switch, "cpu_seconds")
    time_speedup = None
    if step_speedup and dense_cpu and switch_cpu:
      time_speedup = step_speedup * dense_cpu / switch_cpu
    rows.append([name, scaling.DESIGNS[name].objective, dense[-1]["step"], target,
                 repro_curves.final_quality(switch),
                 repro_curves.final_quality(switch) - target,
                 round(reached, 1) if reached else "not reached",
                 f"{step_speedup:.2f}x" if step_speedup else "-",
                 dense_cpu, switch_cpu,
                 f"{time_speedup:.2f}x" if time_speedup else "-"])
  return rows


HEADER = ["design", "objective", "steps", "dense final", "switch final", "gap (switch - dense)",
          "switch step reaching dense final", "step speed-up", "dense CPU s/step",
          "switch CPU s/step", "CPU-time speed-up"]


def choose(rows: list) -> tuple:
  """(design, reason) by RULE."""
  if not rows:
    return None, "no design finished"
  reached = [r for r in rows if r[7] != "-"]
  if reached:
    best = max(float(r[7][:-1]) for r in reached)
    tied = [r for r in reached if float(r[7][:-1]) >= best - 0.05]
    pick = min(tied, key=lambda r: r[9] or float("inf"))
    why = (f"largest step speed-up ({pick[7]})" if len(tied) == 1 else
           f"step speed-up {pick[7]}, tied within 0.05 with "
           f"{', '.join(r[0] for r in tied if r is not pick)}, and the cheapest of them")
    return pick[0], why
  pick = max(rows, key=lambda r: r[5])
  return pick[0], f"no Switch model reached its dense final quality; largest gap {pick[5]:+.4f}"


def plot_gaps(path: str, curves: dict, flags) -> None:
  """Switch - dense quality at each checkpoint, per design, against steps."""
  plt = outputs.pyplot()
  fig, axes = plt.subplots(figsize=(7, 4.5))
  for name, dense, switch in design_pairs(curves, flags):
    at = repro_curves.quality_at(dense)
    rows = [(r["step"], r["neg_log_perplexity"] - at[r["step"]]) for r in switch
            if r["step"] in at and r["step"] > 0]
    axes.plot([s for s, _ in rows], [g for _, g in rows], marker=".", label=name)
  axes.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
  axes.set_xlabel("training step")
  axes.set_ylabel(f"switch_{flags.experts} - dense, eval neg log perplexity")
  axes.set_title("Pilot: the Switch advantage as it appears, per design")
  axes.grid(alpha=0.3)
  axes.legend(fontsize="small")
  fig.tight_layout()
  outputs.save(fig, path)


def write_results(curves, settings, flags, started, failures):
  rows = design_rows(curves, flags)
  if not rows:
    print("no design has both models finished: nothing to compare", flush=True)
    return None
  results_dir = flags.results_dir
  outputs.write_curves_csv(os.path.join(results_dir, "curves.csv"), curves)
  outputs.write_rows_csv(os.path.join(results_dir, "designs.csv"), HEADER, rows)
  outputs.plot_curves(os.path.join(results_dir, "quality.png"), curves,
                      f"Pilot, {flags.experts} experts vs dense, batch {settings['batch_size']}")
  plot_gaps(os.path.join(results_dir, "gaps.png"), curves, flags)
  chosen, why = choose(rows)
  designs = "".join(f"* `{n}`: {scaling.DESIGNS[n].description}\n" for n in flags.designs)
  sizes = "; ".join(scaling.sizes_text(scaling.DESIGNS[n]) for n in flags.designs)
  return outputs.write_markdown(os.path.join(results_dir, "README.md"), [
      "# Pilot: which expert-scaling design resolves the Switch advantage soonest",
      designs,
      "![Switch minus dense quality per design](gaps.png)",
      outputs.markdown_table(HEADER, rows),
      RULE,
      f"**Chosen: `{chosen}`** ({why}).",
      "CPU-time speed-up = step speed-up x dense CPU s/step / Switch CPU s/step: the "
      "advantage per unit of the trainer's CPU time, at the pilot's budget. The LM design's "
      "quality is per target token of a different task, so compare designs by their speed-ups "
      "and gaps' signs, not by their absolute quality.",
      "![quality of every pilot model](quality.png)",
      "".join(f"* {name}: {reason}\n" for name, reason in failures.items()),
      repro_report.run_description(settings, settings["command"], time.time() - started,
                                   sizes, curves),
  ])


def _add_flags(parser) -> None:
  parser.add_argument("--designs", nargs="+", default=list(PILOT_DESIGNS),
                      choices=sorted(scaling.DESIGNS))
  parser.add_argument("--experts", type=int, default=PILOT_EXPERTS)


def _task(flags, resolved: str) -> str:
  flags.base_task = scaling.base_task(flags, resolved)
  return flags.base_task


REPRODUCTION = repro_main.Reproduction(
    script=SCRIPT, path=paths.tool(SCRIPT), description=__doc__.split("\n\n")[0],
    sizes=DEFAULT_SIZES,
    variants=pilot_variants, write_results=write_results, add_flags=_add_flags,
    task_of=_task)


def main(argv=None) -> int:
  return repro_main.main(REPRODUCTION, argv)
