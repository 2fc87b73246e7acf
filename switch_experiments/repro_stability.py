"""Training-stability tables at small scale: Table 2 (selective precision), Table 3 (init
scale, three seeds) and Appendix C (router exploration policies).

All models are gin/models/switch_tiny.gin (t5_tiny with 8 experts every other FFN) changed in
one thing each. One baseline run - float32, init scale 0.1, input jitter, data seed 1 - is
shared by the three tables (it is Table 2's float32 row, Table 3's first 0.1 seed and
Appendix C's input-jitter row).

    python tools/repro_stability.py                       # all three tables
    python tools/repro_stability.py --table 3             # only Table 3's six runs

Table 2's "bfloat16 everywhere" row sets ``mtf_switch.SwitchFFN.router_dtype = "bfloat16"``:
the router's product and softmax then run in bfloat16 too. Table 3's seed is both the
training data seed (order and span noise) and the initialisation seed
(``mtf_switch.init_seed``). Rerunning the same command resumes.

``--num_experts`` changes every variant's expert count (the paper's Table 2 is a 32-expert
model); it is a setting of the run, so it needs its own ``--output_dir`` and ``--results_dir``:

    python tools/repro_stability.py --table 2 --num_experts 32 --steps 1500 --batch_size 32 \
        --output_dir runs/repro_stability_table2 --results_dir results/repro_stability_table2
"""

import argparse
import dataclasses
import os
import statistics
import time

from switch_experiments import paths, repro_curves, repro_main, repro_report
from switch_experiments import repro_outputs as outputs
from switch_experiments.repro_settings import Variant

SCRIPT = "repro_stability"
SWITCH_GIN = "models/switch_tiny.gin"
SEEDS = (1, 2, 3)
BASELINE = Variant("baseline", (SWITCH_GIN,), (),
                   "float32, init scale 0.1, input jitter, data and init seed 1",
                   data_seed=1)
POLICIES = ("argmax", "sample", "input_dropout", "input_jitter")

# Paper numbers, arXiv 2101.03961.
# Strings, so the tables print them exactly as the paper does.
PAPER_TABLE2 = {  # a 32-expert model early in training: neg log perplexity, examples/s
    "float32": ("-1.718", "1160"), "bfloat16": ("-3.780 (diverged)", "1390"),
    "bfloat16, float32 router": ("-1.716", "1390")}
PAPER_TABLE3 = {"0.1": ("-2.72", "0.01"), "1.0": ("-3.60", "0.68")}  # mean, std (3 seeds)
PAPER_APPENDIX_C = {"argmax": "-1.471", "sample": "-1.570", "input_dropout": "-1.480",
                    "input_jitter": "-1.468"}


def init_variant(scale: str, seed: int) -> Variant:
  if scale == "0.1" and seed == 1:
    return BASELINE
  return Variant(f"init{scale}_seed{seed}", (SWITCH_GIN,),
                 (f"mtf_switch.SwitchFFN.init_scale = {scale}",),
                 f"init scale {scale}, data and init seed {seed}", data_seed=seed)


def policy_variant(policy: str) -> Variant:
  if policy == "input_jitter":
    return BASELINE
  return Variant(f"router_{policy}", (SWITCH_GIN,),
                 (f'mtf_switch.SwitchFFN.router_policy_train = "{policy}"',),
                 f"router policy {policy} in training (argmax in evaluation)",
                 data_seed=1)


BF16 = Variant("bfloat16_f32_router", (SWITCH_GIN,), ('activation_dtype = "bfloat16"',),
               "bfloat16 activations, float32 router (selective precision)", data_seed=1)
BF16_EVERYWHERE = Variant(
    "bfloat16_everywhere", (SWITCH_GIN,),
    ('activation_dtype = "bfloat16"', 'mtf_switch.SwitchFFN.router_dtype = "bfloat16"'),
    "bfloat16 activations and a bfloat16 router", data_seed=1)


DEFAULT_EXPERTS = 8  # switch_tiny.gin's


def with_experts(variant: Variant, num_experts: int) -> Variant:
  """The variant with ``num_experts`` experts in every Switch layer (unchanged at the default)."""
  if num_experts == DEFAULT_EXPERTS:
    return variant
  return dataclasses.replace(
      variant, gin_params=variant.gin_params + (f"mtf_switch.SwitchFFN.num_experts = {num_experts}",),
      description=f"{variant.description}; {num_experts} experts")


def variants_for(tables, num_experts: int = DEFAULT_EXPERTS) -> list:
  """Variants in the order they run: one of each table first, so a cut-short run has rows."""
  chosen = [BASELINE]
  if "2" in tables:
    chosen += [BF16, BF16_EVERYWHERE]
  if "c" in tables:
    chosen += [policy_variant(p) for p in POLICIES]
  if "3" in tables:
    chosen += [init_variant(scale, seed) for seed in SEEDS for scale in ("0.1", "1.0")]
  unique = {}
  for variant in chosen:
    unique.setdefault(variant.name, with_experts(variant, num_experts))
  return list(unique.values())


def _quality(curves, variant):
  curve = curves.get(variant.name)
  return repro_curves.final_quality(curve) if curve else None


def table2(curves, settings) -> str:
  header = ["precision", "final eval neg log perplexity", "examples/s (train)",
            "paper quality", "paper examples/s"]
  rows = []
  for label, variant in (("float32", BASELINE), ("bfloat16", BF16_EVERYWHERE),
                         ("bfloat16, float32 router", BF16)):
    curve = curves.get(variant.name)
    quality = repro_curves.final_quality(curve) if curve else "not run"
    speed = repro_curves.examples_per_second(curve, settings["batch_size"]) if curve else None
    rows.append([label, quality, speed, *PAPER_TABLE2[label]])
  return "\n\n".join([
      "## Table 2: selective precision",
      outputs.markdown_table(header, rows),
      precision_gaps(curves),
      "Examples/s on a CPU say how this CPU runs bfloat16 (oneDNN uses native bfloat16 "
      "instructions where the CPU has them, and converts otherwise), not the TPU speed-up the "
      "paper measured, and compare only between runs on a quiet machine. The paper's rows: a "
      "32-expert Switch model early in training.",
  ])


def precision_gaps(curves) -> str:
  """How far each bfloat16 row is from float32 at the end and at its worst checkpoint.

  A divergence shows as a gap that opens and grows; a gap within the noise of one seed does
  not say one precision is better.
  """
  base = {r["step"]: r["neg_log_perplexity"] for r in curves.get(BASELINE.name, [])}
  lines = []
  for label, variant in (("bfloat16 everywhere", BF16_EVERYWHERE),
                         ("bfloat16, float32 router", BF16)):
    rows = [r for r in curves.get(variant.name, []) if r["step"] in base and r["step"] > 0]
    if not rows:
      continue
    gaps = [(r["neg_log_perplexity"] - base[r["step"]], r["step"]) for r in rows]
    worst, worst_step = min(gaps)
    lines.append(f"{label} minus float32: {gaps[-1][0]:+.4f} nats at step {gaps[-1][1]}, "
                 f"{worst:+.4f} at its worst checkpoint (step {worst_step}).")
  return " ".join(lines)


def table3(curves) -> str:
  header = ["init scale", "seeds run", "final quality per seed", "mean", "std",
            "paper mean", "paper std"]
  rows = []
  for scale in ("0.1", "1.0"):
    values = [q for seed in SEEDS if (q := _quality(curves, init_variant(scale, seed)))
              is not None]
    mean = statistics.mean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else None
    rows.append([scale, len(values), ", ".join(f"{v:.4f}" for v in values) or "-", mean, std,
                 *PAPER_TABLE3[scale]])
  return "\n\n".join([
      "## Table 3: initialisation scale (three seeds each)",
      outputs.markdown_table(header, rows),
      "std is the sample standard deviation over the seeds run. init_scale here scales the "
      "Switch layers' router and expert weights only (mtf_switch.SwitchFFN.init_scale); the "
      "paper scales every weight of the model. Paper: a 32-expert Switch model after 3.5k "
      "steps.",
  ])


def appendix_c(curves) -> str:
  header = ["router policy (training)", "final eval neg log perplexity", "paper quality"]
  rows = [[p, _quality(curves, policy_variant(p)) or "not run", PAPER_APPENDIX_C[p]]
          for p in POLICIES]
  return "\n\n".join([
      "## Appendix C (Table 11): router exploration",
      outputs.markdown_table(header, rows),
      "Evaluation routes by argmax for every policy. Paper: Table 11 of arXiv 2101.03961.",
  ])


def write_results(curves, settings, flags, started, failures) -> str:
  results_dir = flags.results_dir
  outputs.write_curves_csv(os.path.join(results_dir, "curves.csv"), curves)
  outputs.plot_curves(os.path.join(results_dir, "quality.png"), curves,
                      f"Stability variants of switch_tiny, {settings['task']}")
  final_rows = [[n, c[-1]["step"], repro_curves.final_quality(c),
                 repro_curves.examples_per_second(c, settings["batch_size"])]
                for n, c in curves.items()]
  outputs.write_rows_csv(os.path.join(results_dir, "final.csv"),
                        ["model", "step", "eval_neg_log_perplexity", "examples_per_second"],
                        final_rows)
  sizes = ("switch_tiny: d_model 128, d_ff 512, 4 heads of 32, 2 encoder + 2 decoder layers, "
           f"every other FFN a Switch layer of {settings.get('num_experts', DEFAULT_EXPERTS)} "
           "experts with d_ff 512, capacity factor 1.25 "
           "train / 2.0 eval, group size 1024, inputs 128 / targets 32 tokens, Adafactor, "
           "constant LR 0.01")
  return outputs.write_markdown(os.path.join(results_dir, "README.md"), [
      "# Stability at small scale: Table 2, Table 3, Appendix C",
      "![quality against steps and training seconds](quality.png)",
      table2(curves, settings) if "2" in _tables(flags) else "",
      table3(curves) if "3" in _tables(flags) else "",
      appendix_c(curves) if "c" in _tables(flags) else "",
      "Per-model final figures: `final.csv`; curves: `curves.csv`.",
      "".join(f"* {name} failed: {reason}\n" for name, reason in failures.items()),
      repro_report.run_description(settings, settings["command"], time.time() - started,
                                   sizes, curves),
  ])


def _add_flags(parser) -> None:
  parser.add_argument("--table", action="append", choices=("2", "3", "c"), default=None,
                      help="which tables to run (repeatable; default all three)")
  parser.add_argument("--num_experts", type=_at_least_two, default=DEFAULT_EXPERTS,
                      help=f"experts per Switch layer in every variant (default {DEFAULT_EXPERTS})")


def _at_least_two(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = None
  if value is None or value < 2:
    raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {text!r}")
  return value


def _tables(flags) -> list:
  return flags.table or ["2", "3", "c"]


REPRODUCTION = repro_main.Reproduction(
    script=SCRIPT, path=paths.tool(SCRIPT), description=__doc__.split("\n\n")[0],
    sizes={"steps": 200, "checkpoint_every": 100, "batch_size": 16, "eval_batches": 8},
    variants=lambda flags: variants_for(_tables(flags), flags.num_experts),
    write_results=write_results, add_flags=_add_flags,
    extra_settings=lambda flags: {"num_experts": flags.num_experts})


def main(argv=None) -> int:
  return repro_main.main(REPRODUCTION, argv)
