"""What the training benchmarks share: runs measured in rotating rounds, and their table.

Each run of a benchmark is one process measured once per round; the order rotates by one run
each round, so that no run always starts on a machine warmed (or loaded) by the same other.
"""

from typing import Callable, Dict, List, Sequence, Tuple

Run = Tuple[str, ...]


def run_rounds(runs: Sequence[Run], rounds: int, measure: Callable[..., dict],
               describe: Callable[[dict], str]) -> Dict[Run, List[dict]]:
  """{run: [its record of each round]}; ``measure(*run)`` gives a record (with "error" when
  it failed), and ``describe(record)`` the progress line of one that did not."""
  samples = {run: [] for run in runs}
  for round_index in range(rounds):
    shift = round_index % len(runs)
    for run in list(runs[shift:]) + list(runs[:shift]):
      record = measure(*run)
      outcome = (f"failed: {record['error']}" if "error" in record else describe(record))
      print(f"round {round_index + 1}: {'/'.join(run)} {outcome}", flush=True)
      samples[run].append(record)
  return samples


def markdown_table(columns: Sequence[str], rows: Sequence[dict], keys: Sequence[str],
                   cells: Callable[[dict], Sequence[str]]) -> str:
  """A markdown table: one line per row, its ``keys`` columns then ``cells(row)``; a row with
  an "error" shows the error's start instead of its cells."""
  lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
  for row in rows:
    named = [str(row[k]) for k in keys]
    if "error" in row:
      lines.append("| " + " | ".join(named) + f" | failed: {row['error'][:80]} |"
                   + "|" * (len(columns) - len(keys) - 1))
    else:
      lines.append("| " + " | ".join([*named, *cells(row)]) + " |")
  return "\n".join(lines)
