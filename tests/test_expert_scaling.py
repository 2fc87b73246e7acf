"""The expert-scaling analysis (tools/repro_expert_scaling.py, its pilot and plots) on curves
made here, with figures checkable by hand. The scripts' end-to-end runs are in
test_repro_scripts.py."""

import json

import pytest

from switch_experiments import repro_curves, repro_runs, repro_scaling_plots
from switch_experiments import repro_expert_scaling as scaling
from switch_experiments import repro_expert_scaling_pilot as pilot
from switch_experiments.repro_settings import Variant


def _curve(qualities, step=100, cpu_per_step=0.5):
  return [{"step": i * step, "train_seconds": i * step * 0.6,
           "cpu_seconds": i * step * cpu_per_step, "neg_log_perplexity": q}
          for i, q in enumerate(qualities)]


def test_step_reaching_interpolates_between_checkpoints():
  curve = _curve([-9.0, -5.0, -4.0, -3.5])
  # -4.5 lies half-way between step 100 (-5.0) and step 200 (-4.0).
  assert repro_curves.step_reaching(curve, -4.5) == pytest.approx(150.0)
  assert repro_curves.step_reaching(curve, -4.0) == pytest.approx(200.0)
  assert repro_curves.step_reaching(curve, -9.5) == 0.0  # already there at the first one
  assert repro_curves.step_reaching(curve, -3.0) is None


def test_mean_curve_over_seeds():
  mean = repro_curves.mean_curve([_curve([-9.0, -5.0]), _curve([-9.0, -4.0]),
                                  _curve([-9.0, -6.0, -3.0])])
  assert [r["step"] for r in mean] == [0, 100]  # the steps every seed has
  assert mean[1]["neg_log_perplexity"] == pytest.approx(-5.0)
  assert mean[1]["std"] == pytest.approx(1.0)  # sample std of -5, -4, -6
  assert mean[1]["seeds"] == 3 and mean[1]["cpu_seconds"] == pytest.approx(50.0)
  assert repro_curves.mean_curve([_curve([-9.0, -5.0])])[1]["std"] == 0.0


def _scaling_curves():
  # dense reaches -4.0 at step 400 (seeds -3.9 and -4.1 -> mean -4.0, std 0.1414);
  # switch_16 reaches -4.0 at step 200 and ends at -3.5 (seeds -3.4, -3.6).
  return {
      "dense": _curve([-9, -6, -5, -4.5, -3.9]),
      "switch_16": _curve([-9, -5, -4.0, -3.8, -3.4], cpu_per_step=0.6),
      "switch_4": _curve([-9, -5.5, -4.6, -4.2, -3.95], cpu_per_step=0.55),
      "dense.seed2": _curve([-9, -6, -5, -4.5, -4.1]),
      "switch_16.seed2": _curve([-9, -5, -4.0, -3.8, -3.6], cpu_per_step=0.6),
  }


def test_speedup_rows_average_seeds_and_count_deviations():
  rows = {r[0]: dict(zip(scaling.SPEEDUP_HEADER, r, strict=True))
          for r in scaling.speedup_rows(_scaling_curves())}
  assert list(rows) == ["dense", "switch_16", "switch_4"]
  dense, switch = rows["dense"], rows["switch_16"]
  assert dense["seeds"] == 2 and dense["final eval neg log perplexity (seed mean)"] == -4.0
  assert dense["seed std"] == pytest.approx(0.1414, abs=1e-4)
  assert switch["first checkpoint >= dense final"] == 200
  assert switch["step speed-up"] == "2.00x"
  assert switch["gap to dense"] == pytest.approx(0.5)
  # Both seed pairs are +-0.1 around their means: pooled std 0.1414, gap 0.5 -> 3.5 sigma.
  assert switch["gap / pooled seed std"] == "3.5"
  # CPU time: dense 400 steps x 0.5 s = 200 s; switch reaches it at 200 x 0.6 = 120 s.
  assert switch["CPU-time speed-up"] == "1.67x"
  assert switch["CPU s per step"] == pytest.approx(0.6)
  # switch_4 crosses -4.0 between steps 300 (-4.2) and 400 (-3.95): at 380.
  assert rows["switch_4"]["step speed-up (interpolated)"] == "1.05x"
  assert rows["switch_4"]["seed std"] is None  # one seed: no spread to report


def test_goal_verdict_reads_the_rows():
  rows = scaling.speedup_rows(_scaling_curves())
  verdict = scaling.goal_verdict(rows, "switch_16")
  assert "The 2x / 3-sigma goal is met." in verdict
  assert "switch_4 1.05x, switch_16 2.00x - it grows" in verdict
  curves = _scaling_curves()
  # The same dense mean from a wide seed spread (-3.5 and -4.5): the gap is 1 sigma.
  curves["dense"] = _curve([-9, -6, -5, -4.5, -3.5])
  curves["dense.seed2"] = _curve([-9, -6, -5, -4.5, -4.5])
  assert "goal is NOT met" in scaling.goal_verdict(scaling.speedup_rows(curves), "switch_16")


def test_ordering_verdict_sorts_by_expert_count():
  verdict = scaling.ordering_verdict(_scaling_curves())
  assert verdict.startswith("Ordering holds")
  assert verdict.index("switch_4") < verdict.index("switch_16")


def test_dense_is_no_speed_up_of_itself_and_its_plateau_is_stated():
  curves = {"dense": _curve([-9, -6, -4.2, -4.1, -4.2]), "switch_4": _curve([-9, -5, -4.2])}
  rows = {r[0]: r for r in scaling.speedup_rows(curves)}
  # Dense's final -4.2 was first reached at step 200 of 400: the row says where, no speed-up.
  assert rows["dense"][5] == 200 and rows["dense"][6:9] == ["-", "-", "-"]
  assert rows["switch_4"][6] == "2.00x"
  text = scaling.dense_plateau(list(rows.values()))
  assert "first reached its final quality at step 200 of 400" in text and "2.00x" in text
  # A dense curve still improving at its end has no plateau to report.
  assert scaling.dense_plateau(scaling.speedup_rows({"dense": _curve([-9, -6, -5])})) == ""


def test_a_partial_run_claims_no_ordering_and_no_growth():
  curves = _scaling_curves()
  # Only dense finished: nothing is ordered (this once read "Ordering holds").
  verdict = scaling.ordering_verdict({"dense": curves["dense"]})
  assert verdict.startswith("Ordering not assessed") and "finished: dense" in verdict
  assert scaling.ordering_verdict({"switch_4": curves["switch_4"]}).startswith("Ordering not")
  # One Switch model: a speed-up but no trend.
  rows = scaling.speedup_rows({k: curves[k] for k in ("dense", "dense.seed2", "switch_16",
                                                      "switch_16.seed2")})
  verdict = scaling.goal_verdict(rows, "switch_16")
  assert "needs two or more Switch models" in verdict and "it grows" not in verdict


def test_full_run_variants_order_and_seeds():
  design = scaling.DESIGNS["paper"]
  variants = scaling.model_variants(design, [4, 16, 64], seeds=[1, 2, 3], seeded_experts=16)
  assert [v.name for v in variants] == [
      "dense", "switch_4", "switch_16", "switch_64",
      "dense.seed2", "switch_16.seed2", "dense.seed3", "switch_16.seed3"]
  by_name = {v.name: v for v in variants}
  assert by_name["switch_16.seed3"].data_seed == 3
  assert "mtf_switch.SwitchFFN.num_experts = 64" in by_name["switch_64"].gin_params
  assert by_name["dense"].gin_files == ("models/t5_tiny.gin",)
  rsqrt = scaling.model_variants(scaling.DESIGNS["rsqrt_lr"], [16])
  assert all("repro/rsqrt_schedule.gin" in v.gin_files for v in rsqrt)
  assert scaling.model_of("switch_16.seed2") == "switch_16"


def test_task_of_each_objective():
  assert scaling.task_for("full_lm", "switch_docs_span_corruption") == "switch_docs_full_lm"
  assert scaling.task_for("span_corruption", "my_task") == "my_task"
  with pytest.raises(SystemExit, match="'my_task'"):
    scaling.task_for("full_lm", "my_task")


def test_docs_task_names_match_the_registry():
  from tasks import shared_data

  assert scaling.DOCS_TASKS == shared_data.DOCS_TASKS


def _pilot_row(design, speedup, switch_cpu, gap=0.1):
  return [design, "span_corruption", 600, -4.0, -4.0 + gap, gap, 300.0, speedup, 0.5,
          switch_cpu, "-"]


def test_pilot_rule():
  rows = [_pilot_row("paper", "1.30x", 0.6), _pilot_row("every_ffn", "1.50x", 0.8),
          _pilot_row("rsqrt_lr", "1.47x", 0.6)]
  # every_ffn leads by 0.03: a tie, and rsqrt_lr is cheaper.
  assert pilot.choose(rows)[0] == "rsqrt_lr"
  rows[2][7] = "1.40x"
  assert pilot.choose(rows)[0] == "every_ffn"
  # No Switch model reached its dense final quality: the largest gap decides.
  unreached = [_pilot_row("paper", "-", 0.6, gap=-0.02), _pilot_row("decoder_lm", "-", 0.9,
                                                                     gap=-0.01)]
  assert pilot.choose(unreached)[0] == "decoder_lm"


def test_pilot_shares_a_dense_model_between_designs():
  class Flags:
    designs = ["paper", "every_ffn", "decoder_lm"]
    experts = 16
    base_task = "switch_docs_span_corruption"

  flags = Flags()
  names = [v.name for v in pilot.pilot_variants(flags)]
  assert names == ["paper.dense", "paper.switch_16", "every_ffn.switch_16",
                   "decoder_lm.dense", "decoder_lm.switch_16"]
  assert flags.dense_of == {"paper": "paper.dense", "every_ffn": "paper.dense",
                            "decoder_lm": "decoder_lm.dense"}


def test_expert_load_table_from_training_scalars():
  layer = "encoder/block_000/layer_003/SwitchFFN"
  scalars = {f"moe/{layer}/expert_load/000": {100: 1.5, 200: 1.1},
             f"moe/{layer}/expert_load/001": {100: 0.5, 200: 0.9},
             f"moe/{layer}/dropped_fraction": {100: 0.2, 200: 0.05},
             f"moe/{layer}/router_entropy": {100: 0.6}}
  steps, loads, dropped = repro_scaling_plots.load_by_layer(scalars)[layer]
  assert steps == [100, 200] and loads == [[1.5, 1.1], [0.5, 0.9]] and dropped == [0.2, 0.05]
  assert repro_scaling_plots.load_by_layer({f"moe/{layer}/router_entropy": {1: 0.5}}) == {}


def test_a_record_stands_in_only_for_the_same_model(tmp_path):
  settings = {"task": "t", "batch_size": 4, "checkpoint_every": 2, "data_seed": 1,
              "gin_file": [], "gin_param": [], "init_seed": "x", "steps": 4, "eval_batches": 2}
  variant = Variant("switch_2", ("models/switch_tiny.gin",), ("a = 1",), "", data_seed=1)
  curve = _curve([-9.0, -5.0])
  record = {"fingerprint": repro_runs._fingerprint(variant, settings), "curve": curve}  # noqa: SLF001
  (tmp_path / "switch_2.json").write_text(json.dumps(record))
  assert repro_runs.read_record(str(tmp_path), variant, settings)["curve"] == curve
  assert repro_runs.read_record(str(tmp_path), variant, {**settings, "steps": 8}) is None
  other = Variant("switch_2", ("models/switch_tiny.gin",), ("a = 2",), "", data_seed=1)
  assert repro_runs.read_record(str(tmp_path), other, settings) is None
  assert repro_runs.read_record(None, variant, settings) is None


def test_a_longer_record_stands_in_cut_only_when_asked(tmp_path):
  settings = {"task": "t", "batch_size": 4, "checkpoint_every": 100, "data_seed": 1,
              "gin_file": [], "gin_param": [], "init_seed": "x", "steps": 300, "eval_batches": 2}
  variant = Variant("switch_2", ("models/switch_tiny.gin",), ("a = 1",), "", data_seed=1)
  curve = _curve([-9.0, -5.0, -4.0, -3.5, -3.2])  # steps 0..400
  scalars = {"moe/x/expert_load/000": {"100": 1.5, "300": 1.2, "400": 1.1}}
  trained = repro_runs._fingerprint(variant, {**settings, "steps": 400})  # noqa: SLF001
  record = {"fingerprint": trained, "curve": curve, "training_scalars": scalars}
  (tmp_path / "switch_2.json").write_text(json.dumps(record))
  assert repro_runs.read_record(str(tmp_path), variant, settings) is None
  cut = repro_runs.read_record(str(tmp_path), variant, settings, cut_longer=True)
  assert [r["step"] for r in cut["curve"]] == [0, 100, 200, 300]
  assert cut["curve"][-1]["neg_log_perplexity"] == -3.5
  assert cut["training_scalars"] == {"moe/x/expert_load/000": {"100": 1.5, "300": 1.2}}
  assert cut["cut_from_steps"] == 400
  assert cut["fingerprint"] == repro_runs._fingerprint(variant, settings)  # noqa: SLF001
  # Never a shorter record, another model's, or one without a checkpoint at the asked step.
  longer = {**settings, "steps": 500}
  assert repro_runs.read_record(str(tmp_path), variant, longer, cut_longer=True) is None
  assert repro_runs.read_record(str(tmp_path), variant, {**settings, "data_seed": 2},
                                cut_longer=True) is None
  assert repro_runs.read_record(str(tmp_path), variant, {**settings, "steps": 250},
                                cut_longer=True) is None
