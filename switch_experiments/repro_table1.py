"""Table 1 at small scale: dense, top-2 MoE and Switch at capacity factors 2.0, 1.25, 1.0.

Every model is t5_tiny (gin/models/t5_tiny.gin) with, for the sparse ones, every other FFN an
8-expert layer of the dense d_ff: Switch (top-1, gin/models/switch_tiny.gin), MoE (top-2,
gin/models/moe_tiny.gin), and Switch+ (top-1 at capacity factor 1.0 with wider experts,
standing in for the paper's bigger Switch-Base+ that runs at MoE's speed). The table gives,
for each: quality at the final step, the first step and training seconds at which eval quality
reaches a threshold, training examples per second, and the fraction of tokens dropped
(over capacity) during training.

The threshold is fixed by rule before anything is measured: the dense model's final quality
(so the dense model reaches it at its last step), unless --threshold is given.

    python tools/repro_table1.py                          # the committed full run

Rerunning the same command resumes: trained models and evaluated checkpoints are not redone.
"""

import os
import time

from switch_experiments import paths, repro_curves, repro_main, repro_report, run_results
from switch_experiments import repro_outputs as outputs
from switch_experiments.repro_settings import Variant

SCRIPT = "repro_table1"
DENSE_GIN = "models/t5_tiny.gin"
SWITCH_GIN = "models/switch_tiny.gin"
MOE_GIN = "models/moe_tiny.gin"
CAPACITY_FACTORS = (2.0, 1.25, 1.0)
DROPPED_TAG = r"moe/.*/dropped_fraction"
# The paper's Table 1 (Switch-Base / MoE-Base, 128 experts, C4): capacity factor, neg log
# perplexity after 100k steps, hours to reach -1.50, examples/second on 32 TPUv3 cores.
PAPER_ROWS = {
    "dense": ("T5-Base", "-", "-1.731", "not achieved", "1600"),
    "moe_cf2.0": ("MoE-Base", 2.0, "-1.547", "68.7", "840"),
    "switch_cf2.0": ("Switch-Base", 2.0, "-1.554", "72.8", "860"),
    "moe_cf1.25": ("MoE-Base", 1.25, "-1.559", "80.7", "790"),
    "switch_cf1.25": ("Switch-Base", 1.25, "-1.553", "65.0", "910"),
    "moe_cf1.0": ("MoE-Base", 1.0, "-1.572", "80.1", "860"),
    "switch_cf1.0": ("Switch-Base", 1.0, "-1.561", "62.8", "1000"),
    "switch_plus_cf1.0": ("Switch-Base+", 1.0, "-1.534", "67.6", "780"),
}


# Run order: the rows that carry the paper's main comparison first, so a run stopped early
# still answers it (the table itself follows the paper's row order).
RUN_ORDER = ("dense", "switch_cf1.0", "moe_cf2.0", "switch_cf1.25", "moe_cf1.25",
             "switch_cf2.0", "moe_cf1.0", "switch_plus_cf1.0")


def variants(switch_plus_hidden: int) -> list:
  """The eight models, in RUN_ORDER."""
  rows = [Variant("dense", (DENSE_GIN,), (), "t5_tiny")]
  for cf in CAPACITY_FACTORS:
    rows.append(Variant(f"moe_cf{cf}", (MOE_GIN,),
                        (f"mtf_switch.MoEFFN.capacity_factor_train = {cf}",),
                        f"top-2 MoE, 8 experts, train capacity factor {cf}"))
    rows.append(Variant(f"switch_cf{cf}", (SWITCH_GIN,),
                        (f"mtf_switch.SwitchFFN.capacity_factor_train = {cf}",),
                        f"Switch, 8 experts, train capacity factor {cf}"))
  rows.append(Variant(
      "switch_plus_cf1.0", (SWITCH_GIN,),
      ("mtf_switch.SwitchFFN.capacity_factor_train = 1.0",
       f"mtf_switch.SwitchFFN.hidden_size = {switch_plus_hidden}"),
      f"Switch+, 8 experts of d_ff {switch_plus_hidden}, train capacity factor 1.0"))
  return sorted(rows, key=lambda v: RUN_ORDER.index(v.name))


def table_rows(curves: dict, settings: dict, output_dir: str, threshold: float) -> list:
  rows = []
  for name in [n for n in PAPER_ROWS if n in curves]:
    curve = curves[name]
    reached = repro_curves.first_step_reaching(curve, threshold)
    dropped = (run_results.scalar_mean(os.path.join(output_dir, name), DROPPED_TAG)
               if name != "dense" else None)
    paper = PAPER_ROWS.get(name, ("-",) * 5)
    rows.append([name, curve[-1]["step"], repro_curves.final_quality(curve),
                 reached["step"] if reached else "not reached",
                 reached["train_seconds"] if reached else None,
                 repro_curves.examples_per_second(curve, settings["batch_size"]),
                 dropped if dropped is None else f"{100 * dropped:.2f}%",
                 f"{paper[0]} cf {paper[1]}", paper[2], paper[3], paper[4]])
  return rows


def write_results(curves, settings, flags, started, failures):
  if "dense" not in curves and flags.threshold is None:
    print("no dense model in this invocation and no --threshold: no table", flush=True)
    return None
  results_dir = flags.results_dir
  threshold = (flags.threshold if flags.threshold is not None
               else repro_curves.final_quality(curves["dense"]))
  outputs.write_curves_csv(os.path.join(results_dir, "curves.csv"), curves)
  header = ["model", "steps", "final eval neg log perplexity",
            f"first step >= {threshold:.4f}", "train s to threshold", "examples/s (train)",
            "tokens dropped (train)", "paper row", "paper quality @100k",
            "paper hours to -1.50", "paper examples/s"]
  rows = table_rows(curves, settings, flags.output_dir, threshold)
  outputs.write_rows_csv(os.path.join(results_dir, "table1.csv"), header, rows)
  outputs.plot_curves(os.path.join(results_dir, "quality.png"), curves,
                      f"Table 1 at small scale, {settings['task']}, batch {settings['batch_size']}")
  sizes = ("t5_tiny: d_model 128, d_ff 512, 4 heads of 32, 2 encoder + 2 decoder layers, "
           "inputs 128 / targets 32 tokens, Adafactor, constant LR 0.01; sparse models: every "
           "other FFN a sparse layer of 8 experts with d_ff 512 (Switch+: "
           f"{flags.switch_plus_hidden}), group size 1024, eval capacity factor 2.0, "
           "load-balance loss 0.01, init scale 0.1; Switch routes with input jitter, MoE with "
           "argmax top-2 and GShard's random second-expert policy")
  threshold_rule = (f"given by --threshold ({threshold:.4f})" if flags.threshold is not None
                    else f"the dense model's final quality ({threshold:.4f}), a rule fixed "
                         "before the run")
  return outputs.write_markdown(os.path.join(results_dir, "README.md"), [
      "# Table 1 at small scale: dense, top-2 MoE and Switch across capacity factors",
      "![quality against steps and training seconds](quality.png)",
      outputs.markdown_table(header, rows),
      f"Threshold: {threshold_rule}; resolution is the checkpoint interval "
      f"({settings['checkpoint_every']} steps). Examples/s: training sequences per second "
      "between the first and last checkpoint (start-up excluded, checkpoint saving included), "
      "on a shared 2-core CPU, so only ratios between rows carry meaning, and only roughly. "
      "Tokens dropped: mean over training of every sparse layer's `dropped_fraction` summary "
      "(written every 100 steps). Paper columns: Table 1 of arXiv 2101.03961 (128 experts, "
      "Base size, 32 TPUv3 cores); the paper's T5-Large row has no counterpart here.",
      "".join(f"* {name} failed: {reason}\n" for name, reason in failures.items()),
      repro_report.run_description(settings, settings["command"], time.time() - started,
                                   sizes, curves),
  ])


def _add_flags(parser) -> None:
  parser.add_argument("--switch_plus_hidden", type=int, default=1024,
                      help="expert d_ff of Switch+ (dense and other experts: d_ff 512)")
  parser.add_argument("--threshold", type=float, default=None,
                      help="quality threshold (default: the dense model's final quality)")


REPRODUCTION = repro_main.Reproduction(
    script=SCRIPT, path=paths.tool(SCRIPT), description=__doc__.split("\n\n")[0],
    sizes={"steps": 400, "checkpoint_every": 50, "batch_size": 16, "eval_batches": 8},
    variants=lambda flags: variants(flags.switch_plus_hidden), write_results=write_results,
    add_flags=_add_flags,
    extra_settings=lambda flags: {"switch_plus_hidden": flags.switch_plus_hidden})


def main(argv=None) -> int:
  return repro_main.main(REPRODUCTION, argv)
