"""Text file in, text file out: decode (or score) with a model directory's checkpoint.

    python tools/infer.py MODEL_DIR --input in.txt --output out.txt
    python tools/infer.py MODEL_DIR --input in.txt --score_targets targets.txt --output scores.txt

MODEL_DIR is what ``python -m mtf_switch.convert from-hf`` wrote (its ``model.gin`` is read
unless --gin_file names the model's gin files) or a training run's directory (give the gin
files it was trained with). One line of ``--output`` per line of ``--input``: the greedy
decode as UTF-8 text, or with --score_targets the log-likelihood of each target line given its
input line. It runs ``switch_mesh_transformer`` (``python -m switch_cli``) with
``utils.run.mode = "infer"`` (or ``"score_from_strings"``) on the latest checkpoint (or
--checkpoint_step), which decodes once and exits (switch_cli/infer.py), then moves Mesh-TF's
``<name>-<step>`` / ``<name>.scores`` file to --output.

The vocabulary is that of --mixture's task; the default, the SST-2 task, encodes with the
model's own ``spiece.model`` when its gin binds ``finetune_vocabulary.path`` (``from-hf``
writes that binding when the HF directory has a spiece.model).
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

from switch_experiments import paths

DEFAULT_MIXTURE = "switch_sst2_tsv"  # tasks/glue.py SST2_TASK


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("model_dir")
  parser.add_argument("--input", required=True, help="text file, one input per line")
  parser.add_argument("--output", required=True, help="text file written, one line per input")
  parser.add_argument("--score_targets", default=None,
                      help="text file of targets, one per input line: score instead of decode")
  parser.add_argument("--gin_file", action="append", default=None,
                      help="the model's gin files (default: MODEL_DIR/model.gin)")
  parser.add_argument("--gin_param", action="append", default=[])
  parser.add_argument("--mixture", default=DEFAULT_MIXTURE,
                      help="task or mixture whose vocabulary encodes and decodes the text")
  parser.add_argument("--checkpoint_step", type=int, default=None,
                      help="the checkpoint to use (default: the latest in MODEL_DIR)")
  parser.add_argument("--batch_size", type=int, default=8, help="sequences per batch")
  parser.add_argument("--module_import", action="append", default=[],
                      help="extra modules for the command line to import (tasks)")
  return parser


def _check(args) -> None:
  for path, what in ((args.model_dir, "MODEL_DIR"), (args.input, "--input"),
                     (args.score_targets, "--score_targets")):
    if path is not None and not os.path.exists(path):
      sys.exit(f"infer.py: error: {what} {path}: no such file or directory")
  if not glob.glob(os.path.join(args.model_dir, "model.ckpt-*.index")):
    sys.exit(f"infer.py: error: MODEL_DIR {args.model_dir} holds no checkpoint "
             f"(model.ckpt-N.index)")
  if args.gin_file is None:
    model_gin = os.path.join(args.model_dir, "model.gin")
    if not os.path.exists(model_gin):
      sys.exit(f"infer.py: error: {model_gin} does not exist; name the model's gin files with "
               f"--gin_file")
    args.gin_file = [model_gin]
  if args.batch_size < 1:
    sys.exit(f"infer.py: error: --batch_size={args.batch_size} must be positive")


def command(args, output_prefix: str):
  """The switch_mesh_transformer command line for these arguments."""
  params = [f"MIXTURE_NAME = {args.mixture!r}",
            f'utils.run.batch_size = ("sequences_per_batch", {args.batch_size})']
  if args.checkpoint_step is not None:
    params.append(f"utils.run.eval_checkpoint_step = {args.checkpoint_step}")
  source = os.path.abspath(args.input)
  if args.score_targets is None:
    params += ['utils.run.mode = "infer"', f"decode_from_file.input_filename = {source!r}",
               f"decode_from_file.output_filename = {output_prefix!r}"]
  else:
    targets = os.path.abspath(args.score_targets)
    params += ['utils.run.mode = "score_from_strings"',
               f"score_from_strings.inputs = {source!r}",
               f"score_from_strings.targets = {targets!r}",
               "score_from_strings.score_postprocess_fn = @utils.save_scores",
               # Its example text would re-detokenize t5's already-decoded strings (bytes,
               # which it cannot): the scores alone.
               "save_scores.save_example_text = False",
               f"save_scores.scores_filename = {output_prefix!r}"]
  args_list = [sys.executable, "-m", "switch_cli", f"--model_dir={args.model_dir}",
               "--gin_file=mesh/cpu_data_parallel.gin"]
  args_list += [f"--gin_file={g}" for g in args.gin_file]
  args_list += [f"--module_import={m}" for m in args.module_import]
  args_list += [f"--gin_param={p}" for p in params + args.gin_param]
  return args_list


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  _check(args)
  output_dir = os.path.dirname(os.path.abspath(args.output))
  os.makedirs(output_dir, exist_ok=True)
  work = tempfile.mkdtemp(prefix=".infer-", dir=output_dir)
  try:
    prefix = os.path.join(work, "out")
    status = subprocess.call(command(args, prefix), env=paths.child_env())
    if status:
      print(f"infer.py: switch_mesh_transformer exited with status {status}", file=sys.stderr)
      return status
    produced = ([prefix + ".scores"] if args.score_targets else
                sorted(glob.glob(prefix + "-*")))
    if len(produced) != 1 or not os.path.exists(produced[0]):
      print(f"infer.py: expected one output file in {work}, found {os.listdir(work)}",
            file=sys.stderr)
      return 1
    shutil.move(produced[0], args.output)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  print(f"wrote {args.output}", file=sys.stderr)
  return 0
