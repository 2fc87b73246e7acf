"""Test-set predictions in the GLUE and SuperGLUE submission formats, from ``infer`` decodes.

The test split's inputs go to ``utils.run.mode = "infer"`` as a text file (one input a line,
``infer_inputs``); its decodes come back one a line. Each decode goes through the task's own t5
postprocessor (a class id, a float for STS-B, MultiRC's question groups, WSC's referent check)
and is written as the benchmark expects:

  GLUE       ``<TASK>.tsv``: header ``index<TAB>prediction``, one row per test example; 0/1 for
             CoLA, SST-2, MRPC, QQP, WNLI, the score for STS-B, the label name for the NLI tasks
  SuperGLUE  ``<Task>.jsonl``: ``{"idx": ..., "label": ...}`` per example; MultiRC one line per
             paragraph with its questions' answers nested

A decode that is no class name (the postprocessor's -1) is written as the task's first class
and counted; the caller reports the count.
"""

import collections
import csv
import json
import os
from typing import Dict, List, Sequence, Tuple

import seqio
import tensorflow_datasets as tfds

# task: (submission file, how a prediction is written).
SUBMISSION_FILES: Dict[str, Tuple[str, str]] = {
    "glue_cola_v002": ("CoLA.tsv", "id"), "glue_sst2_v002": ("SST-2.tsv", "id"),
    "glue_mrpc_v002": ("MRPC.tsv", "id"), "glue_qqp_v002": ("QQP.tsv", "id"),
    "glue_stsb_v002": ("STS-B.tsv", "float"), "glue_wnli_v002": ("WNLI.tsv", "id"),
    "glue_mnli_matched_v002": ("MNLI-m.tsv", "name"),
    "glue_mnli_mismatched_v002": ("MNLI-mm.tsv", "name"),
    "glue_qnli_v002": ("QNLI.tsv", "name"), "glue_rte_v002": ("RTE.tsv", "name"),
    "glue_ax_v002": ("AX.tsv", "name"),
    "super_glue_boolq_v102": ("BoolQ.jsonl", "lowercase"),
    "super_glue_cb_v102": ("CB.jsonl", "name"), "super_glue_copa_v102": ("COPA.jsonl", "id"),
    "super_glue_multirc_v102": ("MultiRC.jsonl", "multirc"),
    "super_glue_rte_v102": ("RTE.jsonl", "name"), "super_glue_wic_v102": ("WiC.jsonl", "lowercase"),
    "super_glue_wsc_v102_simple_eval": ("WSC.jsonl", "referent"),
    "super_glue_axb_v102": ("AX-b.jsonl", "name"), "super_glue_axg_v102": ("AX-g.jsonl", "name"),
}


def test_examples(task: seqio.Task) -> List[dict]:
  """The task's test examples after its preprocessing, in file order (no labels)."""
  if "test" not in task.splits:
    raise ValueError(f"{task.name} has no test split (its file is absent)")
  ds = task.get_dataset(sequence_length=None, split="test", shuffle=False)
  return list(ds.as_numpy_iterator())


def infer_inputs(examples: Sequence[dict]) -> List[str]:
  """One line per example for mesh-tf's decode_from_file (which splits the file on newlines)."""
  return [" ".join(ex["inputs_pretokenized"].decode("utf-8").split()) for ex in examples]


def read_decodes(path: str, count: int) -> List[str]:
  """The first ``count`` decodes of an ``infer`` run's output file, one a line (UTF-8 text, as
  switch_cli/infer.py writes it); ValueError when it holds fewer."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  if lines[-1] == "":  # the newline after the last decode
    lines.pop()
  if len(lines) < count:
    raise ValueError(f"{path}: {len(lines)} decodes for {count} inputs")
  return lines[:count]


def _label_classes(task: seqio.Task) -> Sequence[str]:
  source = task.source
  builder_cls = tfds.builder_cls(source.benchmark)
  return builder_cls.builder_configs[source.config].label_classes or ()


def predictions(task: seqio.Task, examples: Sequence[dict], decodes: Sequence[str]
                ) -> Tuple[List[object], int]:
  """(the value written for each example, how many decodes were no valid answer)."""
  if len(decodes) != len(examples):
    raise ValueError(f"{task.name}: {len(decodes)} decodes for {len(examples)} test examples")
  _, kind = SUBMISSION_FILES[task.name]
  classes = _label_classes(task)
  values, invalid = [], 0
  for example, decode in zip(examples, decodes):
    value = task.postprocess_fn(decode, example=example, is_target=False)
    class_id = value["value"] if kind == "multirc" else value
    if kind not in ("float", "referent") and class_id == -1:
      invalid += 1
      class_id = 0
    if kind == "float":
      values.append(float(value))
    elif kind == "referent":
      values.append("True" if class_id == 1 else "False")
    elif kind == "name":
      values.append(classes[class_id])
    elif kind == "lowercase":
      values.append(classes[class_id].lower())
    else:  # "id" and "multirc"
      values.append(int(class_id))
  return values, invalid


def write_submission(directory: str, task: seqio.Task, examples: Sequence[dict],
                     values: Sequence[object]) -> str:
  """Writes the task's submission file into directory; returns its path."""
  name, kind = SUBMISSION_FILES[task.name]
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, name)
  if name.endswith(".tsv"):
    with open(path, "w", encoding="utf-8", newline="") as f:
      writer = csv.writer(f, delimiter="\t", lineterminator="\n")
      writer.writerow(["index", "prediction"])
      writer.writerows((int(ex["idx"]), value) for ex, value in zip(examples, values))
    return path
  if kind == "multirc":
    paragraphs: Dict[int, Dict[int, list]] = collections.defaultdict(dict)
    for ex, value in zip(examples, values):
      answers = paragraphs[int(ex["idx/paragraph"])].setdefault(int(ex["idx/question"]), [])
      answers.append({"idx": int(ex["idx/answer"]), "label": value})
    records = [{"idx": p, "passage": {"questions": [{"idx": q, "answers": a}
                                                    for q, a in questions.items()]}}
               for p, questions in paragraphs.items()]
  else:
    records = [{"idx": int(ex["idx"]), "label": value} for ex, value in zip(examples, values)]
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  return path
