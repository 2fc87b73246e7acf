"""Benchmark averages (tools/benchmark_averages.py) checked by hand; no shared data needed."""

import json
import os

import pytest
import seqio

from switch_experiments import benchmark_averages, glue_submission
from tasks import paths, registry

SCORES = {
    "glue_cola_v002/matthews_corrcoef": 40.0,
    "glue_mrpc_v002/f1": 80.0, "glue_mrpc_v002/accuracy": 70.0,
    "glue_stsb_v002/pearson_corrcoef": 60.0, "glue_stsb_v002/spearman_corrcoef": 50.0,
    "glue_wnli_v002/accuracy": 10.0,  # not in t5's GLUE average
    "super_glue_cb_v102/mean_3class_f1": 60.0, "super_glue_cb_v102/accuracy": 80.0,
    "super_glue_copa_v102/accuracy": 55.0,
    "super_glue_multirc_v102/f1": 30.0, "super_glue_multirc_v102/exact_match": 10.0,
}


def test_two_metric_tasks_are_averaged_first_then_the_tasks():
  frame = benchmark_averages.scores_table({100: SCORES, 200: {**SCORES, "glue_cola_v002/"
                                                              "matthews_corrcoef": 70.0}})
  # GLUE: CoLA 40, MRPC (80 + 70) / 2 = 75, STS-B (60 + 50) / 2 = 55 -> 170 / 3
  assert frame.loc[100, "Average GLUE Score"] == pytest.approx(170 / 3)
  assert frame.loc[200, "Average GLUE Score"] == pytest.approx(200 / 3)
  # SuperGLUE: CB (60 + 80) / 2 = 70, COPA 55, MultiRC (30 + 10) / 2 = 20 -> 145 / 3
  assert frame.loc[100, "Average SuperGLUE Score"] == pytest.approx(145 / 3)
  assert "CoLA" in frame.columns and "MRPC (F1)" in frame.columns
  assert not any("WNLI" in c for c in frame.columns)
  assert benchmark_averages.average_groups(SCORES) == {
      "Average GLUE Score": ["CoLA", "MRPC", "STSB"],
      "Average SuperGLUE Score": ["CB", "CoPA", "MultiRC"]}


def test_one_benchmark_alone_has_its_average_and_not_the_others():
  # t5's compute_avg_glue alone raised TypeError when no tag of the other benchmark was present.
  glue = benchmark_averages.scores_table({1: {"glue_cola_v002/matthews_corrcoef": 40.0,
                                              "glue_rte_v002/accuracy": 60.0}})
  assert glue.loc[1, "Average GLUE Score"] == pytest.approx(50.0)
  assert "Average SuperGLUE Score" not in glue.columns
  super_glue = benchmark_averages.scores_table({1: {"super_glue_copa_v102/accuracy": 55.0}})
  assert list(super_glue.columns) == ["CoPA", "Average SuperGLUE Score"]


def test_markdown_has_a_row_per_checkpoint():
  text = benchmark_averages.markdown(benchmark_averages.scores_table({5: SCORES, 9: SCORES}),
                                     "switch")
  rows = [line for line in text.splitlines() if line.startswith("| 5 ") or
          line.startswith("| 9 ")]
  assert len(rows) == 2 and rows[0].endswith("| 56.67 | 48.33 |")


# ---------------------------------------------------------------- submission files

DATA = paths.shared_data_dir()
needs_files = pytest.mark.skipif(
    not (DATA / "glue").is_dir() or not (DATA / "super_glue").is_dir(),
    reason=f"{DATA}/glue or super_glue is absent (see ../shared/data/SOURCES.md)")


def _first_test_examples(name, vocabulary, count):
  task = registry.rebuilt_task(seqio.get_mixture_or_task(name), vocabulary=vocabulary)
  return task, glue_submission.test_examples(task)[:count]


def test_infer_decodes_are_read_back_line_by_line(tmp_path):
  path = tmp_path / "decodes-5"
  path.write_text("entailment\n\ncafé\nnot_entailment\n", encoding="utf-8")
  # An empty decode is a decode; the newline after the last one is not.
  assert glue_submission.read_decodes(str(path), 4) == ["entailment", "", "café",
                                                        "not_entailment"]
  assert glue_submission.read_decodes(str(path), 1) == ["entailment"]
  with pytest.raises(ValueError, match="4 decodes for 5 inputs"):
    glue_submission.read_decodes(str(path), 5)


@needs_files
def test_glue_submission_files(tmp_path, glue_vocabulary):
  rte, examples = _first_test_examples("glue_rte_v002", glue_vocabulary, 3)
  assert glue_submission.infer_inputs(examples)[0].startswith("rte sentence1: Mangla was ")
  values, invalid = glue_submission.predictions(
      rte, examples, ["entailment", "not_entailment", "maybe"])
  assert (values, invalid) == (["entailment", "not_entailment", "entailment"], 1)
  path = glue_submission.write_submission(str(tmp_path), rte, examples, values)
  assert os.path.basename(path) == "RTE.tsv"
  assert open(path).read() == "index\tprediction\n0\tentailment\n1\tnot_entailment\n2\tentailment\n"
  cola, examples = _first_test_examples("glue_cola_v002", glue_vocabulary, 2)
  values, _ = glue_submission.predictions(cola, examples, ["acceptable", "unacceptable"])
  glue_submission.write_submission(str(tmp_path), cola, examples, values)
  assert open(tmp_path / "CoLA.tsv").read() == "index\tprediction\n0\t1\n1\t0\n"


@needs_files
def test_super_glue_submission_files(tmp_path, glue_vocabulary):
  cb, examples = _first_test_examples("super_glue_cb_v102", glue_vocabulary, 2)
  values, _ = glue_submission.predictions(cb, examples, ["neutral", "contradiction"])
  glue_submission.write_submission(str(tmp_path), cb, examples, values)
  assert [json.loads(line) for line in open(tmp_path / "CB.jsonl")] == [
      {"idx": 0, "label": "neutral"}, {"idx": 1, "label": "contradiction"}]
  boolq, examples = _first_test_examples("super_glue_boolq_v102", glue_vocabulary, 1)
  values, _ = glue_submission.predictions(boolq, examples, ["True"])
  assert values == ["true"]
  multirc, examples = _first_test_examples("super_glue_multirc_v102", glue_vocabulary, 3)
  values, _ = glue_submission.predictions(multirc, examples, ["True", "False", "True"])
  glue_submission.write_submission(str(tmp_path), multirc, examples, values)
  (record,) = [json.loads(line) for line in open(tmp_path / "MultiRC.jsonl")]
  first = record["passage"]["questions"][0]
  assert (record["idx"], first["idx"]) == (0, 0)
  assert [a["label"] for a in first["answers"]] == [1, 0, 1][:len(first["answers"])]
