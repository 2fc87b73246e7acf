"""tools/finetune_glue.py's own logic, checked by hand: the majority-class baseline (on dev files
written here), the side-by-side table, the CSV rows, and the flags' errors. No shared data, no
command-line run (tests/test_cli_finetune_glue.py runs the tool end to end)."""

import csv
import json
import math
import os

import pandas as pd
import pytest
import seqio

from switch_experiments import (benchmark_averages, finetune_glue, finetune_sst2, glue_report,
                                majority_baseline)
from tasks import benchmark_files, registry

# ---------------------------------------------------------------- the majority class


def test_majority_predictions_predict_the_most_common_answer():
  assert majority_baseline.majority_predictions([1, 0, 1, 1]) == (1, [1, 1, 1, 1])
  # A tie goes to the smallest answer, whatever the order.
  assert majority_baseline.majority_predictions([1, 0])[0] == 0
  assert majority_baseline.majority_predictions([0, 1])[0] == 0
  # MultiRC-like targets: the vote is on "value"; each prediction keeps its group.
  targets = [{"group": 0, "value": 1}, {"group": 0, "value": 0}, {"group": 1, "value": 0}]
  answer, predictions = majority_baseline.majority_predictions(targets)
  assert answer == 0
  assert predictions == [{"group": 0, "value": 0}, {"group": 0, "value": 0},
                         {"group": 1, "value": 0}]
  with pytest.raises(ValueError, match="no targets"):
    majority_baseline.majority_predictions([])


def test_a_numpy_answer_becomes_a_plain_value_the_report_can_write():
  """WSC's t5 postprocessor returns numpy integers; the report's JSON must hold the answer."""
  import numpy as np

  class NumpyAnswers:  # the parts of a seqio.Task majority_baseline reads
    name, splits = "wsc_like", ("validation",)
    predict_metric_fns = [lambda targets, predictions: {
        "accuracy": 100 * np.mean([t == p for t, p in zip(targets, predictions)])}]

    def get_dataset(self, **kwargs):
      import tensorflow as tf
      return tf.data.Dataset.from_tensor_slices({"targets_pretokenized": [b"0", b"1", b"0"]})

    def postprocess_fn(self, text, example=None, is_target=False):
      return np.int64(text)

  baseline = majority_baseline.majority_baseline(NumpyAnswers())
  assert type(baseline["answer"]) is int
  assert json.loads(json.dumps(baseline)) == {
      "answer": 0, "examples": 3, "counts": {"0": 2, "1": 1},
      "scores": {"wsc_like/accuracy": pytest.approx(200 / 3)}}


def _task(name, config, directory, vocabulary):
  """t5's registered task, reading the files written here, with the small vocabulary."""
  source = benchmark_files.BenchmarkFilesSource("glue", config, directory, task_name=name)
  return registry.rebuilt_task(seqio.get_mixture_or_task(name), source=source,
                               vocabulary=vocabulary)


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")


def test_majority_baseline_scores_the_dev_file_with_the_tasks_metrics(tmp_path, glue_vocabulary):
  import tasks  # noqa: F401  (t5's tasks registered)

  labels = ["not_entailment", "entailment", "not_entailment", "not_entailment", "entailment"]
  _write(tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n" + "".join(
      f"{i}\tA premise {i}.\tA hypothesis.\t{label}\n" for i, label in enumerate(labels)))
  rte = majority_baseline.majority_baseline(
      _task("glue_rte_v002", "rte", tmp_path, glue_vocabulary))
  # not_entailment is class 1 and 3 of the 5 dev examples.
  assert rte["answer"] == 1 and rte["examples"] == 5 and rte["counts"] == {"1": 3, "0": 2}
  assert rte["scores"] == {"glue_rte_v002/accuracy": pytest.approx(60.0)}

  # MRPC, 3 paraphrases of 4: always "equivalent" has precision 3/4, recall 1.
  _write(tmp_path / "MRPC" / "dev.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
         + "".join(f"{q}\t{i}\t{i + 9}\tOne {i}.\tTwo {i}.\n" for i, q in enumerate([1, 0, 1, 1])))
  mrpc = majority_baseline.majority_baseline(
      _task("glue_mrpc_v002", "mrpc", tmp_path, glue_vocabulary))
  assert mrpc["scores"]["glue_mrpc_v002/accuracy"] == pytest.approx(75.0)
  assert mrpc["scores"]["glue_mrpc_v002/f1"] == pytest.approx(100 * 2 * 0.75 / 1.75)

  # CoLA (no header): a constant prediction has a Matthews correlation of 0.
  _write(tmp_path / "CoLA" / "dev.tsv", "s\t1\t\tThe cat sat.\ns\t0\t*\tCat the sat.\n"
         "s\t1\t\tA dog ran.\n")
  cola = majority_baseline.majority_baseline(
      _task("glue_cola_v002", "cola", tmp_path, glue_vocabulary))
  assert cola["answer"] == 1 and cola["scores"]["glue_cola_v002/matthews_corrcoef"] == 0.0

  with pytest.raises(ValueError, match="no 'train' split"):
    majority_baseline.majority_baseline(_task("glue_rte_v002", "rte", tmp_path, glue_vocabulary),
                                        "train")


# ---------------------------------------------------------------- the table

SWITCH = {10: {"glue_cola_v002/matthews_corrcoef": 20.0, "glue_rte_v002/accuracy": 50.0},
          20: {"glue_cola_v002/matthews_corrcoef": 40.0, "glue_rte_v002/accuracy": 60.0},
          30: {"glue_cola_v002/matthews_corrcoef": 30.0, "glue_rte_v002/accuracy": 50.0}}
DENSE = {10: {"glue_cola_v002/matthews_corrcoef": 10.0, "glue_rte_v002/accuracy": 70.0},
         20: {"glue_cola_v002/matthews_corrcoef": 10.0, "glue_rte_v002/accuracy": 70.0}}
BASELINE = {"glue_cola_v002/matthews_corrcoef": 0.0, "glue_rte_v002/accuracy": 52.7}


def test_side_by_side_shows_best_average_and_last_checkpoints_and_the_baseline():
  frames = glue_report.frames_of({"switch": SWITCH, "dense": DENSE})
  baseline = benchmark_averages.scores_table({0: BASELINE})
  assert glue_report.chosen_steps(frames["switch"], "Average GLUE Score") == {"best": 20,
                                                                              "last": 30}
  # dense ties at 40 at both steps: the earliest is the best.
  assert glue_report.chosen_steps(frames["dense"], "Average GLUE Score") == {"best": 10,
                                                                             "last": 20}
  header, rows = glue_report.side_by_side(frames, baseline, "Average GLUE Score")
  assert header == ["metric", "switch (best avg., step 20)", "switch (last, step 30)",
                    "dense (best avg., step 10)", "dense (last, step 20)", "majority class"]
  assert rows == [["CoLA", "40.00", "30.00", "10.00", "10.00", "0.00"],
                  ["GLUE RTE", "60.00", "50.00", "70.00", "70.00", "52.70"],
                  ["Average GLUE Score", "50.00", "40.00", "40.00", "40.00", "26.35"]]
  text = glue_report.markdown_table(header, rows)
  assert text.splitlines()[2] == "| CoLA | 40.00 | 30.00 | 10.00 | 10.00 | 0.00 |"


def test_an_undefined_baseline_score_is_shown_as_a_dash_and_kept_out_of_the_csv():
  stsb = {"glue_stsb_v002/pearson_corrcoef": math.nan,
          "glue_stsb_v002/spearman_corrcoef": math.nan, **BASELINE}
  frames = glue_report.frames_of({"switch": {5: {**SWITCH[10], "glue_stsb_v002/pearson_corrcoef":
                                                 80.0, "glue_stsb_v002/spearman_corrcoef": 70.0}}})
  baseline = benchmark_averages.scores_table({0: stsb})
  _, rows = glue_report.side_by_side(frames, baseline, "Average GLUE Score")
  by_metric = {row[0]: row[1:] for row in rows}
  assert by_metric["STSB (Pearson)"] == ["80.00", "80.00", "-"]
  # (20 + 50 + (80 + 70) / 2) / 3 for the model; undefined with STS-B undefined.
  assert by_metric["Average GLUE Score"] == ["48.33", "48.33", "-"]
  csv_rows = glue_report.long_rows("glue", frames, baseline)
  assert ["glue", "switch", 5, "STSB (Pearson)", 80.0] in csv_rows
  assert ["glue", "majority class", "", "GLUE RTE", 52.7] in csv_rows
  assert not [r for r in csv_rows if r[1] == "majority class" and r[3].startswith("STSB")]
  assert len([r for r in csv_rows if r[1] == "switch"]) == 5  # 4 metrics + the average


def test_chosen_steps_needs_a_checkpoint():
  with pytest.raises(ValueError, match="no evaluated checkpoints"):
    glue_report.chosen_steps(pd.DataFrame(), "Average GLUE Score")


# ---------------------------------------------------------------- flags


def _models(*argv):
  return finetune_glue.models_from_flags(finetune_glue.parser().parse_args(list(argv)))


def test_bad_flags_are_named_before_anything_runs(tmp_path):
  (tmp_path / "model.ckpt-7.index").write_text("")
  with pytest.raises(SystemExit, match="expected NAME=VALUE, got 'switch'"):
    _models("--model", "switch")
  with pytest.raises(SystemExit, match="no model.ckpt-N checkpoint"):
    _models("--model", f"a={tmp_path / 'absent'}")
  with pytest.raises(SystemExit, match="no --model_gin a=... and no .*model.gin"):
    _models("--model", f"a={tmp_path}")
  with pytest.raises(SystemExit, match=r"--model_gin for unknown model\(s\) \['b'\]"):
    _models("--model", f"a={tmp_path}", "--model_gin", "a=models/t5_tiny.gin",
            "--model_gin", "b=x.gin")
  with pytest.raises(SystemExit, match="--switch_gin_file are for the default pair only"):
    _models("--model", f"a={tmp_path}", "--pretrain_steps", "5")
  with pytest.raises(SystemExit, match="must be positive"):
    _models("--finetune_steps", "0")
  (model,) = _models("--model", f"a={tmp_path}", "--model_gin", "a=models/t5_tiny.gin",
                     "--model_gin", "a=mesh/cpu_data_parallel.gin")
  assert model.gin_files == ["models/t5_tiny.gin", "mesh/cpu_data_parallel.gin"]
  with pytest.raises(SystemExit, match="--switch_gin_file are for the default pair only"):
    _models("--model", f"a={tmp_path}", "--switch_gin_file", "repro/experts_64.gin")
  pair = _models("--pretrain_dir", str(tmp_path))
  assert [(m.name, m.model_dir) for m in pair] == [
      ("switch", str(tmp_path / "pretrain" / "switch")),
      ("dense", str(tmp_path / "pretrain" / "dense"))]
  flags = finetune_glue.parser().parse_args(["--benchmarks", "glue,superglue"])
  with pytest.raises(SystemExit, match=r"--benchmarks: unknown \['superglue'\]"):
    finetune_glue.benchmarks_from_flags(flags)
  flags = finetune_glue.parser().parse_args(["--gin_file", "mesh/absent.gin"])
  with pytest.raises(SystemExit, match="gin file 'mesh/absent.gin' not found"):
    finetune_glue.check_gin_files(pair, flags)
  with pytest.raises(SystemExit, match="neither a .model file nor a registered task"):
    finetune_glue.vocabulary_path("no_such_task")


def test_the_default_pair_pretrains_with_the_headline_recipe_and_never_mixes_recipes(tmp_path):
  flags = finetune_glue.parser().parse_args(["--pretrain_dir", str(tmp_path)])
  switch = finetune_glue.pretrain_recipe("switch", flags)
  dense = finetune_glue.pretrain_recipe("dense", flags)
  assert switch["task"] == dense["task"] == "switch_english_span_corruption"
  assert switch["gin_files"] == ["repro/constant_rsqrt.gin", "repro/twin_init.gin"]
  assert dense["gin_files"] == ["repro/constant_rsqrt.gin"]
  model_dir = str(tmp_path / "pretrain" / "switch")
  finetune_sst2.check_pretrain_recipe(model_dir, switch)  # nothing there yet: fine
  os.makedirs(model_dir)
  (tmp_path / "pretrain" / "switch" / "model.ckpt-20.index").write_text("")
  with pytest.raises(SystemExit, match=r"checkpoints \[20\] but no pretrain_recipe.json"):
    finetune_sst2.check_pretrain_recipe(model_dir, switch)
  finetune_sst2.write_pretrain_recipe(model_dir, switch)
  finetune_sst2.check_pretrain_recipe(model_dir, switch)  # the same recipe resumes
  # A Switch model built otherwise (64 experts) is pre-trained, fine-tuned and evaluated so;
  # its dense twin is the same model as before, so it keeps the same recipe.
  wider = finetune_glue.parser().parse_args(
      ["--pretrain_dir", str(tmp_path), "--switch_gin_file", "repro/experts_64.gin"])
  assert finetune_glue.pretrain_recipe("switch", wider)["gin_files"] == [
      "repro/constant_rsqrt.gin", "repro/twin_init.gin", "repro/experts_64.gin"]
  assert finetune_glue.pretrain_recipe("dense", wider) == dense
  switch_model, dense_model = finetune_glue.models_from_flags(wider)
  assert switch_model.gin_files[-1] == "repro/experts_64.gin"
  assert "repro/experts_64.gin" not in dense_model.gin_files
  with pytest.raises(SystemExit, match=r"another recipe \(gin_files: .*experts_64"):
    finetune_sst2.check_pretrain_recipe(model_dir, finetune_glue.pretrain_recipe("switch", wider))
  other = finetune_glue.parser().parse_args(
      ["--pretrain_dir", str(tmp_path), "--pretrain_task", "switch_pydocs_span_corruption"])
  with pytest.raises(SystemExit, match=r"another recipe \(task: \['switch_english_span_corr"):
    finetune_sst2.check_pretrain_recipe(model_dir, finetune_glue.pretrain_recipe("switch",
                                                                               other))


# ---------------------------------------------------------------- the report from t5's summaries


def _write_eval_summaries(model_dir, scores):
  """What t5's eval mode leaves: model.ckpt-N files and eval/{task}/{metric} summaries."""
  import tensorflow.compat.v1 as tf

  os.makedirs(model_dir / "validation_eval", exist_ok=True)
  with tf.Graph().as_default():
    writer = tf.summary.FileWriter(str(model_dir / "validation_eval"))
    for step, tags in scores.items():
      (model_dir / f"model.ckpt-{step}.index").write_text("")
      writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag=f"eval/{tag}", simple_value=v)
                                           for tag, v in tags.items()]), step)
    writer.close()


def _scored_glue_runs(tmp_path):
  """(output_dir, flags, timings) of a GLUE run whose checkpoints t5 has scored already."""
  output_dir = tmp_path / "runs"
  for name, scores in (("switch", SWITCH), ("dense", DENSE)):
    _write_eval_summaries(output_dir / "glue" / name, scores)
  flags = finetune_glue.parser().parse_args(
      ["--output_dir", str(output_dir), "--results_dir", str(tmp_path / "results"),
       "--benchmarks", "glue", "--finetune_steps", "20", "--eval_every", "10"])
  return output_dir, flags, finetune_glue.Timings(str(output_dir / "times.json"))


def test_the_report_states_the_scores_t5_wrote(tmp_path, monkeypatch):
  output_dir, flags, timings = _scored_glue_runs(tmp_path)
  models = [finetune_glue.Model("switch", "pre/switch", ["models/switch_tiny.gin"], init_step=0),
            finetune_glue.Model("dense", "pre/dense", ["models/t5_tiny.gin"], init_step=0)]
  # Every checkpoint already has its scores, so nothing is run.
  monkeypatch.setattr(finetune_glue.cli_runs, "run_cli", lambda *a, **k: pytest.fail("ran"))
  scores = {"glue": {m.name: finetune_glue.evaluate(m, "glue", str(output_dir / "glue" / m.name),
                                                    flags, None, timings) for m in models}}
  assert scores["glue"]["switch"] == {s: pytest.approx(v) for s, v in SWITCH.items()}
  base = {"glue": {"glue_rte_v002": {"examples": 5, "counts": {"1": 3, "0": 2},
                                     "scores": {"glue_rte_v002/accuracy": 60.0}},
                   "glue_cola_v002": {"examples": 4, "counts": {"1": 2, "0": 2},
                                      "scores": {"glue_cola_v002/matthews_corrcoef": 0.0}}}}
  text = finetune_glue.report(models, ["glue"], scores, base, timings, {}, flags)
  assert "| GLUE RTE | 60.00 | 50.00 | 70.00 | 70.00 | 60.00 |" in text
  assert "| Average GLUE Score | 50.00 | 40.00 | 40.00 | 40.00 | 30.00 |" in text
  assert "Checkpoints scored: switch 10-30 every 10; dense 10-20 every 10." in text
  with open(tmp_path / "results" / "finetune_glue.csv") as f:
    rows = list(csv.reader(f))
  assert ["glue", "switch", "20", "CoLA", "40.0"] in rows
  assert ["glue", "dense", "10", "Average GLUE Score", "40.0"] in rows
  assert os.path.getsize(tmp_path / "results" / "finetune_glue.png") > 1000
  record = json.load(open(tmp_path / "results" / "finetune_glue.json"))
  assert record["dev_scores"]["glue"]["dense"]["20"]["glue_rte_v002/accuracy"] == 70.0


def test_a_resumed_fine_tuning_records_the_steps_it_ran_and_keeps_the_first_runs_time(
    tmp_path, monkeypatch):
  pre, output_dir = tmp_path / "pre", tmp_path / "runs"
  run_dir = output_dir / "glue" / "switch"
  os.makedirs(pre)
  os.makedirs(run_dir)
  (pre / "model.ckpt-100.index").write_text("")
  trained = []

  def fake_train(model_dir, files, params, steps, **kwargs):
    trained.append(steps)
    for step in range(max(finetune_glue.run_results.checkpoint_steps(model_dir) + [100]) + 10,
                      steps + 1, 10):
      (run_dir / f"model.ckpt-{step}.index").write_text("")
    return True

  monkeypatch.setattr(finetune_glue.cli_runs, "train", fake_train)
  model = finetune_glue.Model("switch", str(pre), ["models/switch_tiny.gin"], init_step=100)
  timings = finetune_glue.Timings(str(output_dir / "times.json"))
  for finetune_steps in (20, 50):
    flags = finetune_glue.parser().parse_args(
        ["--output_dir", str(output_dir), "--benchmarks", "glue", "--finetune_steps",
         str(finetune_steps), "--eval_every", "10"])
    finetune_glue.finetune(model, "glue", flags, None, timings)
  assert trained == [120, 150]
  first, resumed = timings.runs["finetune-glue-switch"], timings.runs["finetune-glue-switch #2"]
  assert (first["steps"], first["from_step"], first["to_step"]) == (20, 100, 120)
  assert (resumed["steps"], resumed["from_step"], resumed["to_step"]) == (30, 120, 150)
  # Read back from its file, as the next invocation does.
  assert finetune_glue.Timings(str(output_dir / "times.json")).runs == timings.runs


def test_the_runs_table_shows_the_reported_benchmarks_runs_only(tmp_path):
  _, flags, timings = _scored_glue_runs(tmp_path)
  models = [finetune_glue.Model("switch", "pre/switch", ["models/switch_tiny.gin"], init_step=0)]
  for label in ("pretrain-switch", "finetune-glue-switch", "finetune-super_glue-switch"):
    timings.run(label, lambda: True, steps=1)
  scores = {"glue": {"switch": {s: SWITCH[s] for s in SWITCH}}}
  base = {"glue": {"glue_rte_v002": {"examples": 5, "counts": {"1": 3, "0": 2},
                                     "scores": {"glue_rte_v002/accuracy": 60.0}}}}
  text = finetune_glue.report(models, ["glue"], scores, base, timings, {}, flags)
  assert "| pretrain-switch |" in text and "| finetune-glue-switch |" in text
  assert "super_glue" not in text.split("## Runs")[1]


@pytest.mark.parametrize("steps, text", [
    ([], "none"), ([7], "7"), ([250, 500], "250-500 every 250"),
    ([2250, 2500, 2750, 3000, 3500, 4000, 4500], "2250-3000 every 250, 3500-4500 every 500"),
    ([10, 20, 35], "10-20 every 10, 35"),
    ([10, 20, 30, 45, 60, 61], "10-30 every 10, 45-60 every 15, 61")])
def test_step_runs_name_the_checkpoints_a_resumed_run_scored(steps, text):
  assert finetune_glue.step_runs(steps) == text
