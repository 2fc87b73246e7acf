"""The paper-reproduction scripts (tools/repro_*.py) run end to end at a micro size.

Each script trains a model or two for a handful of steps (gin/repro/micro.gin: d_model 32,
32/8-token sequences, batch 4) on the embedded default corpus, so no shared data is needed,
evaluates every checkpoint and writes its CSV, PNG and markdown. A few minutes in all, most of
it TensorFlow start-up: one process per training and per evaluation. In the slow tier
(tests/conftest.py marks the whole file).
"""

import csv
import json
import os
import shutil

import pytest

from switch_experiments import (
  repro_curves,
  repro_expert_scaling,
  repro_expert_scaling_pilot,
  repro_scaling_plots,
  repro_stability,
  repro_table1,
)

MICRO = ["--task", "switch_default_corpus_span_corruption", "--steps", "4",
         "--checkpoint_every", "2", "--batch_size", "4", "--eval_batches", "2",
         "--gin_file", "repro/micro.gin"]


def _dirs(tmp_path, name):
  return ["--output_dir", str(tmp_path / "runs" / name),
          "--results_dir", str(tmp_path / "results" / name)]


def _csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _outputs_exist(results_dir, *names):
  for name in ("README.md", "quality.png", "curves.csv", *names):
    assert os.path.getsize(results_dir / name) > 0, name


def _curves(results_dir):
  """{model: [(step, train_seconds, quality)]} from curves.csv, ascending by step."""
  curves = {}
  for r in _csv(results_dir / "curves.csv"):
    curves.setdefault(r["model"], []).append(
        (int(r["step"]), float(r["train_seconds"]), float(r["eval_neg_log_perplexity"])))
  return {name: sorted(rows) for name, rows in curves.items()}


def _check_trained_curve(rows):
  """Every checkpoint (0, 2, 4) evaluated; training seconds grow; training helped.

  At step 0 the weights are the random initialisation: a run whose training or evaluation is
  broken (no update reaching the checkpoints, the same checkpoint evaluated twice, figures
  mixed up between steps) does not end with a better validation perplexity than it started.
  """
  assert [step for step, _, _ in rows] == [0, 2, 4]
  seconds = [s for _, s, _ in rows]
  assert seconds[0] == 0.0 and seconds == sorted(seconds) and seconds[-1] > 0, seconds
  quality = [q for _, _, q in rows]
  assert all(-20.0 < q < 0.0 for q in quality), quality
  assert quality[-1] > quality[0], quality


def _check_speedup_table(results, curves):
  """The speed-up table is the curves' own: the first checkpoint at least as good as the dense
  model's final quality, and the dense steps divided by that step; the markdown's finals."""
  target = curves["dense"][-1][2]
  speedup = _csv(results / "speedup.csv")
  assert [r["model"] for r in speedup] == list(curves)
  for row in speedup:
    curve = curves[row["model"]]
    assert float(row["final eval neg log perplexity (seed mean)"]) == pytest.approx(
        curve[-1][2])
    reached = next((step for step, _, q in curve if q >= target), None)
    assert row["first checkpoint >= dense final"] == str(reached or "not reached")
    if row["model"] == "dense":
      assert row["step speed-up"] == "-"  # dense is no speed-up of itself
    elif reached:
      assert row["step speed-up"] == f"{curves['dense'][-1][0] / reached:.2f}x"
  finals = ", ".join(f"{name} {curve[-1][2]:.4f}" for name, curve in curves.items())
  assert finals in (results / "README.md").read_text()


def test_expert_scaling_runs_and_resumes(tmp_path, capsys):
  argv = MICRO + ["--experts", "2", "--seeded_experts", "2", "--seeds", "1"] + _dirs(
      tmp_path, "scaling")
  assert repro_expert_scaling.main(argv) == 0
  results = tmp_path / "results" / "scaling"
  _outputs_exist(results, "speedup.csv", "speedup.png", "expert_load_switch_2.png")
  rows = _csv(results / "curves.csv")
  curves = _curves(results)
  assert sorted(curves) == ["dense", "switch_2"]
  for curve in curves.values():
    _check_trained_curve(curve)
  # The trainer's CPU seconds are recorded beside the wall seconds, and grow.
  cpu = [float(r["cpu_seconds"]) for r in rows if r["model"] == "dense"]
  assert cpu[0] == 0.0 and cpu == sorted(cpu) and cpu[-1] > 0, cpu
  _check_speedup_table(results, curves)
  markdown = (results / "README.md").read_text()
  assert "--experts 2" in markdown  # the command that reproduces the run
  # The Switch model's routing statistics are kept in its record: 2 experts' load in each of
  # its 2 Switch layers, balanced loads summing to the number of experts.
  record = json.loads((results / "models" / "switch_2.json").read_text())
  loads = [t for t in record["training_scalars"] if "/expert_load/" in t]
  assert len(loads) == 4, loads
  assert record["curve"][-1]["neg_log_perplexity"] == pytest.approx(curves["switch_2"][-1][2])

  # Rerunning the same command trains and evaluates nothing again.
  capsys.readouterr()
  assert repro_expert_scaling.main(argv) == 0
  out = capsys.readouterr().out
  assert ": training " not in out and ": evaluating " not in out
  assert _csv(results / "curves.csv") == rows
  # --report_only writes the same results from what is on disk, and names the command that
  # trained the models, not itself.
  assert repro_expert_scaling.main(argv + ["--report_only"]) == 0
  assert _csv(results / "curves.csv") == rows
  (command,) = [line for line in (results / "README.md").read_text().splitlines()
                if line.startswith("* command: ")]
  assert "--experts 2" in command and "--report_only" not in command, command
  _check_routing_replay(tmp_path, argv, results, record)

  # On another machine (no model directories), the committed records stand in for the models.
  shutil.rmtree(tmp_path / "runs" / "scaling")
  capsys.readouterr()
  assert repro_expert_scaling.main(argv) == 0
  out = capsys.readouterr().out
  assert ": training " not in out and "finished earlier" in out
  assert _csv(results / "curves.csv") == rows


def _check_routing_replay(tmp_path, argv, results, record):
  """A record without routing statistics (a model trained before they left the microbatch
  loop) gets them replayed from its checkpoints: balanced loads at every checkpoint, the same
  figures on a second replay, and nothing written into the model's directory."""
  models = results / "models"
  (models / "switch_2.json").write_text(json.dumps(dict(record, training_scalars={})))
  (results / "expert_load_switch_2.png").unlink()
  model_dir = tmp_path / "runs" / "scaling" / "switch_2"

  def run_files():
    return {p: p.stat().st_mtime for p in model_dir.rglob("*") if "logs" not in p.parts}

  before = run_files()
  assert repro_expert_scaling.main(argv + ["--report_only", "--replay_routing"]) == 0
  assert run_files() == before
  replay = json.loads((models / "switch_2.routing_replay.json").read_text())
  assert replay["steps"] == [0, 2, 4] and replay["batches"] == 4 and replay["batch_size"] == 4
  layers = {t.split("/expert_load/")[0] for t in replay["scalars"] if "/expert_load/" in t}
  assert len(layers) == 2, layers
  for layer in layers:
    for step in ("0", "2", "4"):
      loads = [replay["scalars"][f"{layer}/expert_load/{e:03d}"][step] for e in range(2)]
      assert sum(loads) == pytest.approx(2.0, rel=1e-5), (layer, step, loads)
      assert 0.0 <= replay["scalars"][f"{layer}/dropped_fraction"][step] <= 1.0
  assert (results / "expert_load_switch_2.png").exists()
  assert "replayed at each checkpoint" in (results / "README.md").read_text()
  # The batches are fixed (the same digest); the jitter's noise is seeded but its order across
  # the microbatch loop's iterations is not, so a second replay agrees to a few tokens' load.
  (models / "switch_2.routing_replay.json").unlink()
  assert repro_expert_scaling.main(argv + ["--report_only", "--replay_routing"]) == 0
  again = json.loads((models / "switch_2.routing_replay.json").read_text())
  assert again["batches_sha1"] == replay["batches_sha1"]
  assert sorted(again["scalars"]) == sorted(replay["scalars"])
  for tag, values in replay["scalars"].items():
    assert again["scalars"][tag] == pytest.approx(values, rel=0.05, abs=0.05), tag


def test_expert_scaling_pilot_language_model(tmp_path):
  """The decoder-only design: both models train on the full_lm twin of the task, and the
  design table is the curves' own."""
  argv = MICRO + ["--designs", "decoder_lm", "--experts", "2"] + _dirs(tmp_path, "pilot")
  assert repro_expert_scaling_pilot.main(argv) == 0
  results = tmp_path / "results" / "pilot"
  _outputs_exist(results, "designs.csv", "gaps.png")
  curves = _curves(results)
  assert sorted(curves) == ["decoder_lm.dense", "decoder_lm.switch_2"]
  for curve in curves.values():
    _check_trained_curve(curve)
  for model in curves:
    commands = (tmp_path / "runs" / "pilot" / model / "commands").iterdir()
    assert any('MIXTURE_NAME = "switch_default_corpus_full_lm"' in c.read_text()
               for c in commands), model
  (row,) = _csv(results / "designs.csv")
  gap = curves["decoder_lm.switch_2"][-1][2] - curves["decoder_lm.dense"][-1][2]
  assert float(row["gap (switch - dense)"]) == pytest.approx(gap, abs=1e-4)
  assert "**Chosen: `decoder_lm`**" in (results / "README.md").read_text()


def test_changed_training_settings_refuse_to_resume(tmp_path):
  argv = MICRO + ["--experts", "2", "--seeded_experts", "2", "--only", "none"] + _dirs(
      tmp_path, "scaling")
  repro_expert_scaling.main(argv)
  with pytest.raises(SystemExit, match="batch_size"):
    repro_expert_scaling.main(argv + ["--batch_size", "8"])
  # Another design would train other models under the same names: refused too.
  with pytest.raises(SystemExit, match="design"):
    repro_expert_scaling.main(argv + ["--design", "every_ffn"])
  # A directory from before initialisation was seeded is not resumed as a seeded one.
  settings = tmp_path / "runs" / "scaling" / "settings.json"
  recorded = json.loads(settings.read_text())
  del recorded["init_seed"]
  settings.write_text(json.dumps(recorded))
  with pytest.raises(SystemExit, match="init_seed"):
    repro_expert_scaling.main(argv)


def test_table1_top2_moe_row(tmp_path):
  # A threshold no model reaches (neg log perplexity is below 0): "not reached".
  argv = MICRO + ["--only", "moe_cf1.0"] + _dirs(tmp_path, "table1")
  assert repro_table1.main(argv + ["--threshold", "0"]) == 0
  results = tmp_path / "results" / "table1"
  _outputs_exist(results, "table1.csv")
  (row,) = _csv(results / "table1.csv")
  assert row["model"] == "moe_cf1.0"
  assert row["first step >= 0.0000"] == "not reached"
  (curve,) = _curves(results).values()
  _check_trained_curve(curve)
  # Training throughput from the recorded seconds: 4 steps x 4 sequences between the first and
  # the last checkpoint.
  assert float(row["examples/s (train)"]) == pytest.approx(4 * 4 / curve[-1][1], rel=1e-3)
  # Tokens dropped: the mean of the sparse layers' dropped_fraction summaries, a fraction.
  dropped = float(row["tokens dropped (train)"].rstrip("%")) / 100
  assert 0.0 <= dropped <= 1.0

  # The model's own final quality as threshold (set after the run, from disk): the first
  # checkpoint reaching it is a trained one, and the table says which and when.
  threshold = float(f"{curve[-1][2] - 1e-6:.6f}")  # just below: the last step reaches it
  first = next(step for step, _, q in curve if q >= threshold)
  assert repro_table1.main(argv + ["--threshold", str(threshold), "--report_only"]) == 0
  (row,) = _csv(results / "table1.csv")
  assert row[f"first step >= {threshold:.4f}"] == str(first) != "0"
  assert float(row["train s to threshold"]) == pytest.approx(
      next(s for step, s, _ in curve if step == first))


def test_stability_bfloat16_row(tmp_path):
  argv = (MICRO + ["--table", "2", "--only", "bfloat16_f32_router", "--num_experts", "4"]
          + _dirs(tmp_path, "stab"))
  assert repro_stability.main(argv) == 0
  results = tmp_path / "results" / "stab"
  _outputs_exist(results, "final.csv")
  markdown = (results / "README.md").read_text()
  assert "| bfloat16 | not run |" in markdown  # only the float32-router row was asked for
  (curve,) = _curves(results).values()
  _check_trained_curve(curve)
  (final,) = _csv(results / "final.csv")
  assert final["model"] == "bfloat16_f32_router" and final["step"] == "4"
  assert float(final["eval_neg_log_perplexity"]) == pytest.approx(curve[-1][2])
  assert f"| bfloat16, float32 router | {curve[-1][2]:.4f} |" in markdown
  # The model's graph seed is its data seed (1 here), so a rerun starts from the same weights.
  # (t5 records each command line under commands/; evaluation binds no seed, so that its
  # validation sample is the same for every model.)
  commands = (tmp_path / "runs" / "stab" / "bfloat16_f32_router" / "commands").iterdir()
  commands = [c.read_text() for c in commands]
  assert any("mtf_switch.init_seed.seed = 1" in c for c in commands)
  # --num_experts reaches the trained model and the description of what ran.
  assert any("mtf_switch.SwitchFFN.num_experts = 4" in c for c in commands)
  assert "a Switch layer of 4 experts" in markdown


def test_routing_summary_reads_the_first_and_last_step_of_each_layer():
  scalars = {"moe/dec/layer_1/expert_load/000": {0: 1.5, 100: 1.25, 200: 1.1},
             "moe/dec/layer_1/expert_load/001": {0: 0.5, 100: 0.75, 200: 0.9},
             "moe/dec/layer_1/dropped_fraction": {0: 0.25, 100: 0.1, 200: 0.04}}
  assert repro_scaling_plots.routing_summary("switch_2", scalars) == (
      "switch_2: `dec/layer_1` drops 25.0% of tokens at step 0 and 4.0% at step 200; its "
      "busiest expert carries 1.50x then 1.10x the balanced load.")


def test_precision_gaps_give_the_end_and_the_worst_checkpoint():
  def curve(*quality):
    return [{"step": 100 * i, "neg_log_perplexity": q} for i, q in enumerate(quality)]

  curves = {"baseline": curve(-9.0, -5.0, -4.5, -4.0),
            "bfloat16_everywhere": curve(-9.0, -5.5, -4.6, -3.9)}
  text = repro_stability.precision_gaps(curves)
  # -3.9 - -4.0 at the end; -5.5 - -5.0 at step 100 is the worst; step 0 is not a comparison.
  assert text == ("bfloat16 everywhere minus float32: +0.1000 nats at step 300, -0.5000 at its "
                  "worst checkpoint (step 100).")


def test_stability_variants_share_one_baseline():
  names = [v.name for v in repro_stability.variants_for(["2", "3", "c"])]
  assert len(names) == len(set(names)) == 11
  assert names[:3] == ["baseline", "bfloat16_f32_router", "bfloat16_everywhere"]
  assert repro_stability.init_variant("0.1", 1) is repro_stability.policy_variant("input_jitter")


def test_stability_num_experts_binds_every_variant_and_is_a_run_setting(tmp_path):
  default = repro_stability.variants_for(["2", "3", "c"])
  wide = repro_stability.variants_for(["2", "3", "c"], 32)
  assert [v.name for v in wide] == [v.name for v in default]
  for narrow, variant in zip(default, wide, strict=True):
    assert variant.gin_params == (*narrow.gin_params, "mtf_switch.SwitchFFN.num_experts = 32")
  assert all("num_experts" not in " ".join(v.gin_params) for v in default)
  # A run directory holds one expert count: resuming it with another is refused.
  dirs = _dirs(tmp_path, "stab_experts")
  argv = MICRO + ["--table", "2", "--report_only"] + dirs
  assert repro_stability.main(argv + ["--num_experts", "16"]) == 1  # nothing trained yet
  with pytest.raises(SystemExit, match="num_experts"):
    repro_stability.main(argv + ["--num_experts", "32"])


def test_first_step_reaching_uses_checkpoints_only():
  curve = [{"step": 0, "train_seconds": 0.0, "neg_log_perplexity": -9.0},
           {"step": 10, "train_seconds": 5.0, "neg_log_perplexity": -5.0},
           {"step": 20, "train_seconds": 9.0, "neg_log_perplexity": -4.0}]
  assert repro_curves.first_step_reaching(curve, -4.5)["step"] == 20
  assert repro_curves.first_step_reaching(curve, -3.0) is None
  assert repro_curves.examples_per_second(curve, 4) == pytest.approx(20 * 4 / 9.0)
