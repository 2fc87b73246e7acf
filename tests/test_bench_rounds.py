"""switch_experiments.bench_rounds: the rotating rounds and the table of the training benchmarks."""

from switch_experiments import bench_rounds


def test_each_round_starts_one_run_later_and_every_record_is_kept(capsys):
  order = []

  def measure(model, variant):
    order.append((model, variant))
    if (model, variant) == ("switch", "xla") and len(order) > 3:
      return {"error": "out of memory"}
    return {"seconds": len(order)}

  runs = [("dense", "default"), ("switch", "default"), ("switch", "xla")]
  samples = bench_rounds.run_rounds(runs, 2, measure, lambda r: f"{r['seconds']} s")
  assert order == runs + [runs[1], runs[2], runs[0]]
  assert samples == {runs[0]: [{"seconds": 1}, {"seconds": 6}],
                     runs[1]: [{"seconds": 2}, {"seconds": 4}],
                     runs[2]: [{"seconds": 3}, {"error": "out of memory"}]}
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "round 1: dense/default 1 s"
  assert lines[4] == "round 2: switch/xla failed: out of memory"


def test_the_table_has_a_row_per_run_and_a_failed_row_keeps_its_width():
  rows = [{"model": "dense", "variant": "default", "seconds": 0.5},
          {"model": "switch", "variant": "xla", "error": "x" * 100}]
  table = bench_rounds.markdown_table(["model", "variant", "s/step", "steps/s"], rows,
                                      ("model", "variant"),
                                      lambda r: [f"{r['seconds']:.3f}", f"{1 / r['seconds']:.1f}"])
  assert table.splitlines() == [
      "| model | variant | s/step | steps/s |",
      "| --- | --- | --- | --- |",
      "| dense | default | 0.500 | 2.0 |",
      "| switch | xla | failed: " + "x" * 80 + " ||"]
  assert all(line.count("|") == 5 for line in table.splitlines())
