"""t5's own GLUE and SuperGLUE tasks, reading the official files instead of TFDS.

t5 registers ``glue_*_v002``, ``super_glue_*_v102`` (and their variants: WSC's ``_simple_train``
/ ``_simple_eval``, WNLI's ``_simple_eval``, the ``_1_sentinel`` tasks) over TFDS datasets,
which need a download. ``use_benchmark_files`` swaps the source of every registered task that
reads ``glue/...`` or ``super_glue/...`` from TFDS for a ``benchmark_files.BenchmarkFilesSource``
over the same TFDS config (and the same splits), and keeps everything else of the task as t5
registered it: the same name, preprocessors, postprocessor, metrics and output features. A
source swap rather than a prepared TFDS data_dir because the files are small, TFDS's builders
cannot be pointed at local files without faking its download manager, and it leaves t5's task
objects (and so every variant) intact, tested against TFDS's own parsing code.

Where the files come from (read when ``tasks`` is imported):

  MTF_SWITCH_GLUE_DIR, MTF_SWITCH_SUPER_GLUE_DIR
      a directory laid out as in ``tasks.benchmark_files``, or ``tfds`` to keep t5's TFDS
      sources; unset: ``../shared/data/glue`` and ``../shared/data/super_glue`` when they exist,
      else TFDS.

A user with the full GLUE download (``download_glue_data.py``'s glue_data/, MNLI and QQP
included) points ``MTF_SWITCH_GLUE_DIR`` at it; one with TFDS access sets both to ``tfds``.
"""

import os
import re
import sys
from typing import Dict, List, Optional, Tuple

from mtf_base import compat  # noqa: F401  (t5 imports mesh_tensorflow)

# isort: split
import seqio
import t5.data.tasks  # noqa: F401  (registers t5's glue_*_v002 and super_glue_*_v102 tasks)

from tasks import benchmark_files, registry
from tasks import paths as paths_lib

GLUE, SUPER_GLUE = benchmark_files.GLUE, benchmark_files.SUPER_GLUE
DIRECTORY_ENV = {GLUE: "MTF_SWITCH_GLUE_DIR", SUPER_GLUE: "MTF_SWITCH_SUPER_GLUE_DIR"}
USE_TFDS = "tfds"
_TFDS_NAME = re.compile(r"(glue|super_glue)/([^:]+)(?::.*)?")

# {benchmark: directory} of the benchmarks whose tasks currently read files.
_local_directories: Dict[str, str] = {}
# {task name: t5's task as registered before its source was swapped}.
_tfds_tasks: Dict[str, seqio.Task] = {}
_printed: set = set()


def configured_directories(environ=None) -> Dict[str, Optional[str]]:
  """{benchmark: directory, or None for TFDS} from the environment (see the module docstring).

  Raises:
    ValueError: a variable names a directory that does not exist.
  """
  environ = os.environ if environ is None else environ
  chosen = {}
  for benchmark, variable in DIRECTORY_ENV.items():
    value = environ.get(variable, "")
    if value == USE_TFDS:
      chosen[benchmark] = None
    elif value:
      if not os.path.isdir(value):
        raise ValueError(f"{variable}={value!r} is not a directory; give the {benchmark} "
                         f"directory (CoLA/, SST-2/, ... or BoolQ/, CB/, ...) or "
                         f"{USE_TFDS!r} for TFDS")
      chosen[benchmark] = os.path.abspath(value)
    else:
      default = paths_lib.shared_data_dir() / benchmark
      chosen[benchmark] = str(default) if default.is_dir() else None
  return chosen


def tfds_config(task: seqio.Task) -> Optional[Tuple[str, str, Optional[List[str]]]]:
  """(benchmark, TFDS config, splits or None) of a task t5 reads from TFDS glue/super_glue."""
  source = task.source
  if isinstance(source, seqio.TfdsDataSource):
    match = _TFDS_NAME.fullmatch(source.tfds_dataset.name or "")
    if match:
      splits = list(source._splits) or None  # pylint: disable=protected-access
      return match.group(1), match.group(2), splits
  if isinstance(source, benchmark_files.BenchmarkFilesSource):
    return source.benchmark, source.config, list(source.files)
  return None


def use_benchmark_files(directories: Dict[str, Optional[str]]) -> List[str]:
  """Swaps the source of every registered GLUE / SuperGLUE task for the files in directories.

  Args:
    directories: {"glue" or "super_glue": the benchmark's directory, or None to leave its
      tasks as they are}.

  Returns:
    The names of the tasks that now read files.
  """
  swapped = []
  for name in sorted(seqio.TaskRegistry.names()):
    task = seqio.TaskRegistry.get(name)
    found = tfds_config(task)
    if not found or not directories.get(found[0]):
      continue
    benchmark, config, splits = found
    source = benchmark_files.BenchmarkFilesSource(benchmark, config, directories[benchmark],
                                                  splits=splits, task_name=name)
    _tfds_tasks.setdefault(name, task)
    registry.replace_registered(registry.rebuilt_task(task, source=source))
    swapped.append(name)
  for benchmark, directory in directories.items():
    if directory:
      _local_directories[benchmark] = os.fspath(directory)
  return swapped


def use_tfds(benchmarks=(GLUE, SUPER_GLUE)) -> List[str]:
  """Gives the benchmarks' tasks back their TFDS sources; returns the tasks restored."""
  restored = []
  for name, task in sorted(_tfds_tasks.items()):
    if tfds_config(task)[0] in benchmarks:
      registry.replace_registered(task)
      restored.append(name)
      del _tfds_tasks[name]
  for benchmark in benchmarks:
    _local_directories.pop(benchmark, None)
  return restored


def local_directory(benchmark: str) -> Optional[str]:
  """The directory the benchmark's tasks read, or None while they read TFDS."""
  return _local_directories.get(benchmark)


def split_members(weights: Dict[str, float], benchmark: str
                  ) -> Tuple[Dict[str, float], Dict[str, str]]:
  """Splits a t5 weight mapping into (the tasks a mixture can use, {left-out task: why}).

  While the benchmark reads TFDS every task is kept. While it reads files, a task is kept when
  its files are there: the train file for a task with a positive rate, one of its files for an
  evaluation-only task (rate 0, e.g. glue_ax_v002); a task that is not one of the benchmark's
  files (SuperGLUE's dpr_v001_simple, from TFDS definite_pronoun_resolution) is left out.
  """
  directory = local_directory(benchmark)
  if directory is None:
    return dict(weights), {}
  kept, left_out = {}, {}
  for name, rate in weights.items():
    source = seqio.TaskRegistry.get(name).source if name in seqio.TaskRegistry.names() else None
    if not isinstance(source, benchmark_files.BenchmarkFilesSource):
      left_out[name] = f"not among the {benchmark} files"
      continue
    needed = ["train"] if rate > 0 else list(source.files)
    if any(split in source.splits for split in needed):
      kept[name] = rate
    else:
      paths = [os.path.relpath(source.files[s], directory) for s in needed]
      left_out[name] = " and ".join(paths) + " absent"
  return kept, left_out


def announce_left_out(mixture: str, left_out: Dict[str, str]) -> Optional[str]:
  """Prints (once per process and content) the one line naming the tasks a mixture lacks."""
  if not left_out:
    return None
  line = (f"{mixture} leaves out: "
          + "; ".join(f"{name} ({why})" for name, why in left_out.items()))
  if line not in _printed:
    _printed.add(line)
    print(line, file=sys.stderr, flush=True)
  return line
