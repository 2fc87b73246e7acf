"""tools/bench_expert_matmuls.py: its sizes, its checks and one tiny run."""

import json

import pytest

from mtf_switch import cpu_gemm
from switch_experiments import bench_expert_matmuls as bench


def test_rows_slots_and_flops_by_hand():
  shape = bench.Shape()  # 8192 tokens, 128 experts, groups of 4096, capacity factor 1.25
  assert shape.rows_per_expert == 64
  # 2 groups x ceil(4096 / 128 x 1.25) = 2 x 40 slots.
  assert shape.slots_per_expert == 80
  assert bench.useful_gflop(shape) == pytest.approx(2 * 8192 * 512 * 2048 / 1e9)


def test_layer_forms_follow_the_backward_rule():
  many = bench.Shape()  # 80 slots per expert: the backward over the slots
  few = bench.Shape(experts=32, group_size=1024)  # 8 x 40 = 320: per expert
  assert few.slots_per_expert == 320
  with cpu_gemm.assume_onednn_avx2_sgemm(False):
    assert bench.layer_form(many, "forward wi") == bench.layer_form(few, "forward wo") == (
        "per expert")
    assert bench.layer_form(many, "input grad wi") == bench.layer_form(many, "weight grad wo") == (
        "slots")
    assert bench.layer_form(few, "input grad wo") == bench.layer_form(few, "weight grad wi") == (
        "per expert")
  with cpu_gemm.assume_onednn_avx2_sgemm(True):
    # 64 and 256 rows by 2048 (wi) or 512 (wo) columns: oneDNN's no-copy kernel, padded.
    assert bench.layer_form(many, "forward wi") == bench.layer_form(few, "forward wo") == (
        "per expert padded")
    assert bench.layer_form(many, "input grad wi") == "per expert direct"
    assert bench.layer_form(many, "weight grad wi") == "slots"
    assert bench.layer_form(few, "input grad wo") == "per expert direct"
    assert bench.layer_form(few, "weight grad wi") == "per expert"


@pytest.mark.parametrize("kwargs, message", [
    ({"tokens": 100}, "tokens \\(100\\) must be a multiple of experts \\(128\\)"),
    ({"capacity_factor": 0.5}, "capacity_factor 0.5 gives 32 slots per expert, fewer than the 64"),
    ({"d_ff": 0}, "d_ff"),
])
def test_bad_sizes_name_the_value(kwargs, message):
  with pytest.raises(ValueError, match=message):
    bench.check_shape(bench.Shape(**kwargs))


def test_a_tiny_run_times_every_form_and_marks_the_layers(capsys):
  assert bench.main(["--experts", "4", "--tokens", "64", "--group_size", "32", "--d_model", "8",
                     "--d_ff", "16", "--rounds", "2"]) == 0
  out = capsys.readouterr().out
  record = json.loads(next(line for line in out.splitlines() if line.startswith("JSON "))[5:])
  forms = {(row["product"], row["form"]) for row in record["products"]}
  for product in bench.PRODUCTS:
    assert (product, "dense") in forms and (product, "per expert") in forms
    assert (product, "slots") in forms
  assert ("forward wi", "per expert padded") in forms
  assert record["slots_per_expert"] == 2 * 10  # 2 groups x ceil(32 / 4 x 1.25)
  layer = {row["product"]: row["form"] for row in record["products"] if row["layer"]}
  assert layer == {p: bench.layer_form(bench.Shape(64, 4, 32, 1.25, 8, 16), p)
                   for p in bench.PRODUCTS}
  assert record["totals"]["layer_ms"] > 0 and record["totals"]["layer_x_dense"] > 0
