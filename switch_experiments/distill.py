"""Distil a Switch teacher into its FLOP-matched dense student (paper Section 4.2, Table 6).

    python tools/distill.py                        # shared English text, tiny pair
    python tools/distill.py --pretrain_steps 3000 --distill_steps 3000

1. Pre-train the teacher (``models/switch_tiny.gin``) and the dense baseline
   (``models/t5_tiny.gin``) on ``--task`` (shared with tools/finetune_sst2.py's pre-training
   when ``--output_dir`` is the same).
2. Distil: the dense student starts from the teacher's non-expert weights and trains for
   ``--distill_steps`` on (1 - fraction_soft) x ground truth + fraction_soft x teacher
   probabilities (``recipes/distill.gin``; the paper's 0.25 by default).
3. Evaluate the teacher, the baseline and the student on the validation split (negative log
   perplexity) and report the fraction of the teacher's gain over the baseline that the
   student keeps: (student - baseline) / (teacher - baseline). The paper kept about 30%.

Writes ``distill.md`` and ``distill.json`` to ``--results_dir``; reruns resume.
"""

import argparse
import os
import platform
import shlex
import sys

from switch_experiments import cli_runs, finetune_glue, finetune_sst2

DISTILL = "recipes/distill.gin"


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--task", default="switch_pydocs_span_corruption",
                 help="pre-training and distillation data (a text task)")
  p.add_argument("--pretrain_steps", type=int, default=2000)
  p.add_argument("--pretrain_gin_file", action="append", default=[],
                 help="gin files for both models' pre-training (repeatable), e.g. "
                      "repro/constant_rsqrt.gin as tools/finetune_glue.py pre-trains")
  p.add_argument("--switch_pretrain_gin_file", action="append", default=[],
                 help="gin files for the teacher's pre-training only, after "
                      "--pretrain_gin_file (e.g. repro/twin_init.gin)")
  p.add_argument("--switch_gin_file", action="append", default=[],
                 help="gin files that build the teacher differently (repeatable; e.g. "
                      "repro/experts_64.gin), for its pre-training, its evaluation and the "
                      "teacher in distillation, as tools/finetune_glue.py --switch_gin_file")
  p.add_argument("--distill_steps", type=int, default=2000)
  p.add_argument("--fraction_soft", type=float, default=0.25,
                 help="weight of the teacher's probabilities in the loss (paper: 0.25)")
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--pair_gin", default="recipes/distill_tiny_pair.gin",
                 help="binds the student/ and teacher/ layer stacks")
  p.add_argument("--eval_batches", type=int, default=20)
  cli_runs.add_run_flags(p, "section4", "distill", gin_files=False)
  return p


def gain_kept(student: float, baseline: float, teacher: float) -> float:
  """Fraction of the teacher's quality gain over the baseline that the student keeps.

  Defined only when the teacher is better than the baseline: with no gain (or a loss) the
  ratio's sign and size say nothing about distillation, so it raises instead.
  """
  if teacher <= baseline:
    raise ValueError(f"the teacher ({teacher:.4f}) is not better than the baseline "
                     f"({baseline:.4f}): no gain to keep")
  return (student - baseline) / (teacher - baseline)


def _single(results: dict) -> float:
  if len(results) != 1:
    raise SystemExit(f"expected one evaluation, found {sorted(results)}")
  return next(iter(results.values()))


def main(argv=None) -> int:
  flags = parser().parse_args(argv)
  if not 0.0 < flags.fraction_soft <= 1.0:
    raise SystemExit(f"--fraction_soft must be in (0, 1], got {flags.fraction_soft}")
  models = finetune_sst2.MODELS
  mesh = finetune_sst2.MESH
  common = [f'MIXTURE_NAME = "{flags.task}"', *flags.gin_param]
  pretrain_gin = {"switch": [*flags.pretrain_gin_file, *flags.switch_pretrain_gin_file,
                             *flags.switch_gin_file],
                  "dense": list(flags.pretrain_gin_file)}
  # What builds each model when it is evaluated or distilled from (not its schedule or init).
  model_gin = {"switch": [models["switch"], mesh, *flags.switch_gin_file],
               "dense": [models["dense"], mesh]}
  for name, gin_files in pretrain_gin.items():  # before TensorFlow starts
    for path in gin_files:
      if not finetune_glue.gin_file_exists(path):
        raise SystemExit(f"--pretrain_gin_file: gin file {path!r} not found")
    finetune_sst2.check_pretrain_recipe(
        finetune_sst2.pretrain_dir(flags.output_dir, name),
        finetune_sst2.pretrain_recipe(flags.task, gin_files, flags.gin_param))
  quality = {}
  for name in ("switch", "dense"):
    model_dir = finetune_sst2.pretrain(name, flags.task, flags.pretrain_steps,
                                       flags.output_dir, flags.gin_param, flags.module_import,
                                       gin_files=pretrain_gin[name])
    quality[name] = _single(cli_runs.perplexity_eval(
        model_dir, model_gin[name], common, flags.pretrain_steps, name,
        flags.eval_batches, flags.module_import))

  teacher = os.path.join(flags.output_dir, "pretrain", "switch",
                         f"model.ckpt-{flags.pretrain_steps}")
  student_dir = os.path.join(flags.output_dir, "distill", flags.task,
                             f"student_soft{flags.fraction_soft:g}_t{flags.temperature:g}")
  # The teacher's own gin files come last, over the pair file's teacher (its expert count).
  student_gin = [models["dense"], mesh, DISTILL, flags.pair_gin, *flags.switch_gin_file]
  cli_runs.train(student_dir, student_gin,
                 [*common, f'StudentTeacher.teacher_checkpoint = "{teacher}"',
                  f"StudentTeacher.fraction_soft = {flags.fraction_soft}",
                  f"StudentTeacher.temperature = {flags.temperature}"],
                 flags.distill_steps, checkpoint_every=flags.distill_steps, label="student",
                 module_imports=flags.module_import)
  # fraction_soft = 0 builds the student alone (its variables live under student/).
  quality["student"] = _single(cli_runs.perplexity_eval(
      student_dir, student_gin, [*common, "StudentTeacher.fraction_soft = 0.0"],
      flags.distill_steps, "student", flags.eval_batches, flags.module_import))

  # Table 6's control: the same initialisation from the teacher's non-expert weights, trained
  # on the ground truth alone. t5's init_checkpoint restores every variable the dense graph
  # shares with the teacher (the global step too, so it continues from the teacher's).
  init_dir = os.path.join(flags.output_dir, "distill", flags.task, "init_from_teacher_only")
  init_end = flags.pretrain_steps + flags.distill_steps
  cli_runs.train(init_dir, [models["dense"], mesh],
                 [*common, f'utils.run.init_checkpoint = "{teacher}"'], init_end,
                 checkpoint_every=flags.distill_steps, label="init-baseline",
                 module_imports=flags.module_import)
  quality["init_baseline"] = _single(cli_runs.perplexity_eval(
      init_dir, [models["dense"], mesh], common, init_end, "init-baseline",
      flags.eval_batches, flags.module_import))

  try:
    kept = gain_kept(quality["student"], quality["dense"], quality["switch"])
    kept_text = f"{100 * kept:.1f}%"
  except ValueError as err:
    kept, kept_text = None, f"not defined, because {err}"
  # The student's shared weights trained pretrain + distill steps, the baseline's pretrain
  # steps only, so the paper's fraction also counts that extra training (at this size it can
  # exceed 100%). The control trained as long from the same start takes it out.
  alone = quality["student"] - quality["init_baseline"]
  kept_alone = (alone / (quality["switch"] - quality["dense"]) if kept is not None else None)
  alone_text = (f"{alone:+.4f} nats" + (f", {100 * kept_alone:.1f}% of the teacher's gain"
                                        if kept_alone is not None else ""))
  rows = [("dense baseline", models["dense"], flags.pretrain_steps, quality["dense"]),
          ("Switch teacher", ", ".join([models["switch"], *flags.switch_gin_file]),
           flags.pretrain_steps, quality["switch"]),
          ("dense, teacher's non-expert weights, no distillation", models["dense"],
           flags.distill_steps, quality["init_baseline"]),
          (f"distilled dense student ({flags.fraction_soft:g} teacher + "
           f"{1 - flags.fraction_soft:g} ground truth)", models["dense"], flags.distill_steps,
           quality["student"])]
  lines = [f"# Distillation (paper Section 4.2, Table 6) on `{flags.task}`", "",
           "The student is the dense model, initialised from the teacher's non-expert weights "
           "and trained with `recipes/distill.gin`. Quality: validation negative log "
           f"perplexity over {flags.eval_batches} batches. Machine: {platform.machine()}, "
           f"{os.cpu_count()} CPUs. One seed.", "",
           "| model | gin | training steps | neg log perplexity |", "| --- | --- | --- | --- |"]
  lines += [f"| {label} | {gin} | {steps} | {value:.4f} |" for label, gin, steps, value in rows]
  lines += ["", f"Fraction of the teacher's gain kept by the student: {kept_text} "
            "(paper: about 30%). The student's shared weights trained "
            f"{flags.pretrain_steps} + {flags.distill_steps} steps and the baseline's "
            f"{flags.pretrain_steps}, so this fraction also counts the extra training. The "
            "initialisation-only row trains as long as the student from the same start, "
            "without the teacher: the student's lead over it is what distillation itself "
            f"adds: {alone_text}.", "",
            "Command: `python tools/distill.py " + shlex.join(sys.argv[1:]) + "`", ""]
  text = "\n".join(lines)
  record = {"task": flags.task, "pretrain_steps": flags.pretrain_steps,
            "distill_steps": flags.distill_steps, "fraction_soft": flags.fraction_soft,
            "temperature": flags.temperature, "neg_log_perplexity": quality,
            "gain_kept": kept, "distillation_alone": alone,
            "gain_kept_by_distillation_alone": kept_alone}
  cli_runs.write_results(flags.results_dir, "distill", text, record)
  return 0
