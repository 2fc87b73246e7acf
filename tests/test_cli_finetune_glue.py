"""tools/finetune_glue.py end to end: the session's pre-trained tiny Switch model (the
``pretrained`` fixture: d_model 32, 2+2 layers, 4 experts, 32/8 tokens, micro sizes) fine-tuned
for 4 steps on a GLUE and a SuperGLUE mixture of small files written here, every checkpoint
scored, test-set submissions written; the report's numbers must be the evaluation's own (t5's
summaries and its log lines), its averages t5's arithmetic on them, its baselines the dev
files' majority class."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest

from switch_experiments import benchmark_averages
from tests.e2e.cli import CLI_TIMEOUT, GIN, REPO

pytestmark = pytest.mark.slow


STEPS, EVERY = 4, 2
RTE_DEV = ["entailment", "not_entailment", "entailment", "entailment", "not_entailment"]
CB_DEV = ["neutral", "contradiction", "contradiction", "entailment"]


def _write(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_benchmarks(root):
  """GLUE CoLA and RTE, SuperGLUE CB and COPA: a few rows each, in the official layouts."""
  glue, super_glue = root / "glue", root / "super_glue"
  cola = [f"s\t{i % 2}\t{'' if i % 2 else '*'}\tThe {w} sat on the mat." for i, w in
          enumerate(["cat", "dog", "bird", "fish", "cow", "hen"])]
  _write(glue / "CoLA" / "train.tsv", cola)
  _write(glue / "CoLA" / "dev.tsv", cola[:4])
  rte_header = "index\tsentence1\tsentence2\tlabel"
  _write(glue / "RTE" / "train.tsv", [rte_header] + [
      f"{i}\tA man walks {i} dogs.\tA man walks.\t{RTE_DEV[i % 5]}" for i in range(8)])
  _write(glue / "RTE" / "dev.tsv", [rte_header] + [
      f"{i}\tA cat naps {i} times.\tA cat sleeps.\t{label}" for i, label in enumerate(RTE_DEV)])
  _write(glue / "RTE" / "test.tsv", ["index\tsentence1\tsentence2"] + [
      f"{i}\tA dog runs {i} laps.\tA dog moves." for i in range(3)])
  cb = [json.dumps({"premise": f"It was {w}.", "hypothesis": "It was.", "label": label,
                    "idx": i}) for i, (w, label) in enumerate(zip("abcd", CB_DEV))]
  _write(super_glue / "CB" / "train.jsonl", cb)
  _write(super_glue / "CB" / "val.jsonl", cb)
  _write(super_glue / "CB" / "test.jsonl", [
      json.dumps({"premise": "It is late.", "hypothesis": "It is.", "idx": i}) for i in range(2)])
  copa = [json.dumps({"premise": f"The {w} fell.", "choice1": "It broke.", "choice2": "It flew.",
                      "question": "effect", "label": i % 2, "idx": i})
          for i, w in enumerate(["cup", "vase", "plate"])]
  _write(super_glue / "COPA" / "train.jsonl", copa)
  _write(super_glue / "COPA" / "val.jsonl", copa)
  return glue, super_glue


@pytest.fixture(scope="module")
def run(pretrained, tmp_path_factory):
  root = tmp_path_factory.mktemp("finetune_glue")
  glue, super_glue = write_benchmarks(root)
  workdir = pretrained["workdir"]
  output_dir, results_dir = root / "runs", root / "results"
  env = dict(os.environ, E2E_DIR=str(workdir), PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             MTF_SWITCH_CACHE_DIR=str(workdir / "cache"), MTF_SWITCH_GLUE_DIR=str(glue),
             MTF_SWITCH_SUPER_GLUE_DIR=str(super_glue))
  args = [sys.executable, "tools/finetune_glue.py", f"--model=e2e={pretrained['model_dir']}",
          f"--model_gin=e2e={GIN}", "--module_import=tests.e2e.e2e_tasks",
          "--vocabulary=e2e_text_span_corruption", f"--finetune_steps={STEPS}",
          f"--eval_every={EVERY}", "--submissions", f"--output_dir={output_dir}",
          f"--results_dir={results_dir}"]
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=4 * CLI_TIMEOUT)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
  record = json.load(open(results_dir / "finetune_glue.json"))
  return {"record": record, "output_dir": output_dir, "results_dir": results_dir,
          "init": pretrained["after"][-1], "stdout": proc.stdout, "stderr": proc.stderr}


def _log_scores(log_path):
  """{(step, "task/metric"): value} from t5's evaluation log lines."""
  text = open(log_path, encoding="utf-8").read()
  return {(int(m.group(2)), m.group(1)): float(m.group(3))
          for m in re.finditer(r"(\w+/\w+) at step (\d+): (-?[0-9.]+)", text)}


@pytest.mark.parametrize("benchmark,metrics", [
    ("glue", ["glue_cola_v002/matthews_corrcoef", "glue_rte_v002/accuracy"]),
    ("super_glue", ["super_glue_cb_v102/mean_3class_f1", "super_glue_cb_v102/accuracy",
                    "super_glue_copa_v102/accuracy"])])
def test_the_reported_scores_are_the_evaluations_own(run, benchmark, metrics):
  model_dir = run["output_dir"] / benchmark / "e2e"
  steps = [run["init"] + EVERY, run["init"] + STEPS]
  reported = run["record"]["dev_scores"][benchmark]["e2e"]
  assert sorted(int(s) for s in reported) == steps
  summaries = benchmark_averages.eval_scores(str(model_dir))
  logged = _log_scores(run["output_dir"] / benchmark / f"eval-{benchmark}-e2e.log")
  for step in steps:
    assert sorted(reported[str(step)]) == sorted(metrics)
    for metric in metrics:
      assert reported[str(step)][metric] == summaries[step][metric]
      assert reported[str(step)][metric] == pytest.approx(logged[(step, metric)], abs=1e-3)
  # The CSV's average is t5's arithmetic on those scores: two-metric tasks averaged first.
  with open(run["results_dir"] / "finetune_glue.csv") as f:
    rows = [r for r in csv.DictReader(f) if r["benchmark"] == benchmark and r["model"] == "e2e"]
  last = reported[str(steps[-1])]
  if benchmark == "glue":
    name, expected = "Average GLUE Score", (last[metrics[0]] + last[metrics[1]]) / 2
  else:
    name = "Average SuperGLUE Score"
    expected = ((last[metrics[0]] + last[metrics[1]]) / 2 + last[metrics[2]]) / 2
  (average,) = [float(r["value"]) for r in rows if r["step"] == str(steps[-1])
                and r["metric"] == name]
  assert average == pytest.approx(expected, abs=1e-4)
  text = open(run["results_dir"] / "finetune_glue.md").read()
  assert f"(last, step {steps[-1]})" in text and f"{expected:.2f}" in text


def test_the_baselines_are_the_dev_files_majority_class(run):
  base = run["record"]["majority_baseline"]
  # RTE dev: 3 entailment (class 0) of 5; CB dev: contradiction (class 1) 2 of 4.
  assert base["glue"]["glue_rte_v002"]["scores"] == {"glue_rte_v002/accuracy":
                                                     pytest.approx(60.0)}
  assert base["glue"]["glue_cola_v002"]["scores"]["glue_cola_v002/matthews_corrcoef"] == 0.0
  cb = base["super_glue"]["super_glue_cb_v102"]
  assert cb["answer"] == 1 and cb["scores"]["super_glue_cb_v102/accuracy"] == pytest.approx(50)
  text = open(run["results_dir"] / "finetune_glue.md").read()
  assert re.search(r"\| GLUE RTE \|( -?[0-9.]+ \|){2} 60\.00 \|", text), text


def test_runs_submissions_and_plot_are_written(run):
  record = run["record"]
  assert {"finetune-glue-e2e", "eval-glue-e2e", "finetune-super_glue-e2e",
          "eval-super_glue-e2e", "infer-glue-e2e", "infer-super_glue-e2e"} <= set(record["runs"])
  assert record["runs"]["finetune-glue-e2e"]["steps"] == STEPS
  assert all(r["seconds"] > 0 for r in record["runs"].values())
  assert os.path.getsize(run["results_dir"] / "finetune_glue.png") > 1000
  submissions = run["results_dir"] / "submissions" / "e2e"
  rte = open(submissions / "RTE.tsv").read().splitlines()
  assert rte[0] == "index\tprediction" and [r.split("\t")[0] for r in rte[1:]] == ["0", "1", "2"]
  assert {r.split("\t")[1] for r in rte[1:]} <= {"entailment", "not_entailment"}
  cb = [json.loads(line) for line in open(submissions / "CB.jsonl")]
  assert [r["idx"] for r in cb] == [0, 1]
  assert {r["label"] for r in cb} <= {"entailment", "contradiction", "neutral"}
  # The tasks without files are named, not silently dropped.
  assert "switch_glue_v002_proportional leaves out:" in run["stderr"] + run["stdout"]
