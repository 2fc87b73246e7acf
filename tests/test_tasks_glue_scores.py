"""Benchmark averages (tools/benchmark_averages.py) checked by hand; no shared data needed."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import benchmark_averages  # noqa: E402  (tools/)

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


def test_markdown_has_a_row_per_checkpoint():
  text = benchmark_averages.markdown(benchmark_averages.scores_table({5: SCORES, 9: SCORES}),
                                     "switch")
  rows = [line for line in text.splitlines() if line.startswith("| 5 ") or
          line.startswith("| 9 ")]
  assert len(rows) == 2 and rows[0].endswith("| 56.67 | 48.33 |")
