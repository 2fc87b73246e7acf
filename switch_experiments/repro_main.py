"""The one ``main()`` of the reproduction scripts (tools/repro_*.py).

A script says what it reproduces as a ``Reproduction``: its default sizes, its own flags, its
variants and how it writes its results. ``main`` does the rest, the same way for every script:
parse the flags, record and check the run's settings, train and evaluate the chosen variants
(``--only``; a failed variant is reported and the others still run), keep each finished
model's record under ``results_dir/models/`` (so a rerun elsewhere does not retrain it), write
the results, and exit with 1 if any variant failed.
"""

import argparse
import dataclasses
import os
import time
from typing import Callable, Optional, Sequence

from switch_experiments import repro_runs, repro_settings


@dataclasses.dataclass(frozen=True)
class Reproduction:
  """What one script reproduces.

  Attributes:
    script: the name of its run and results directories (``runs/<script>``).
    path: the script's file, for the command line recorded in the results.
    description: the --help text.
    sizes: the full-run defaults of the common flags (steps, checkpoint_every, batch_size,
      eval_batches).
    variants: flags -> the variants to run, in order (``--only`` filters them).
    write_results: (curves, settings, flags, started, failures) -> the markdown written, or
      None when there is nothing to report (printed as given by ``nothing_to_report``).
    add_flags: adds the script's own flags to the parser.
    extra_settings: flags -> settings recorded beside the common ones; like the training
      settings, a rerun must match them to resume.
    task_of: (flags, the task the common flags resolve to) -> the task to train on, for a
      script whose default task or objective is its own.
    cut_longer_records: a committed record of a model trained longer stands in for this
      run's, cut at its steps (only for a schedule whose value at step N does not depend on
      the run's length; ``repro_runs.read_record``).
  """

  script: str
  path: str
  description: str
  sizes: dict
  variants: Callable[[argparse.Namespace], list]
  write_results: Callable[..., Optional[str]]
  add_flags: Callable[[argparse.ArgumentParser], None] = lambda parser: None
  extra_settings: Callable[[argparse.Namespace], dict] = lambda flags: {}
  task_of: Optional[Callable[[argparse.Namespace, str], str]] = None
  cut_longer_records: bool = False


def main(reproduction: Reproduction, argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=reproduction.description)
  repro_settings.add_common_flags(parser, reproduction.script, **reproduction.sizes)
  reproduction.add_flags(parser)
  flags = parser.parse_args(argv)
  started = time.time()
  settings = repro_settings.settings_of(flags, reproduction.script)
  if reproduction.task_of is not None:
    settings["task"] = reproduction.task_of(flags, settings["task"])
  # The variants before the settings are recorded: bad flags are refused with nothing written.
  chosen = [v for v in reproduction.variants(flags) if not flags.only or v.name in flags.only]
  settings["command"] = repro_settings.command_line(reproduction.path, argv)
  if flags.report_only:
    # A report of a run made earlier names the command that trained it, not this one.
    settings["command"] = repro_settings.recorded_command(flags.output_dir) or settings["command"]
  extra = reproduction.extra_settings(flags)
  settings.update(extra)
  repro_settings.check_settings(flags.output_dir, settings, extra_keys=tuple(extra))
  settings["report_only"] = flags.report_only  # for the report only: not recorded
  failures = {}
  curves = repro_runs.run_variants(chosen, settings, flags.output_dir, failures,
                                   flags.report_only,
                                   records_dir=os.path.join(flags.results_dir, "models"),
                                   cut_longer_records=reproduction.cut_longer_records)
  for name, reason in failures.items():
    print(f"{name}: {reason}", flush=True)
  text = reproduction.write_results(curves, settings, flags, started, failures)
  if text is not None:
    print(text)
  return 1 if failures else 0
