"""The project's seqio tasks and mixtures; importing this package registers them all.

Registering is cheap and offline: no data set, vocabulary or corpus is read or built until a task
is used, and importing twice (or calling ``register_all`` again) changes nothing. Names:

  switch_c4_span_corruption            C4 (TFDS c4/en:2.2.0), T5 vocabulary          (tasks.c4)
  switch_mc4_span_corruption           mixture of switch_mc4_{lang} over mC4's 107 language
                                       codes, mT5 vocabulary, rates ~ examples ** 0.3 (tasks.mc4)
  switch_glue_v002_proportional        t5's GLUE tasks, examples-proportional        (tasks.glue)
  switch_super_glue_v102_proportional  t5's SuperGLUE tasks, examples-proportional
                                       (t5's tasks read ../shared/data/glue and super_glue
                                       when present: tasks.benchmark_tasks)
  switch_default_corpus_{span_corruption,prefix_lm,full_lm}
                                       prose harvested from installed documentation, with its
                                       own vocabulary, built on first use  (tasks.default_corpus)

and, if the shared data directory is present, the tasks of ``tasks.shared_data`` (SST-2 from TSV,
the Python docs, the multilingual fortunes mixture).

Built files go to ``$MTF_SWITCH_CACHE_DIR`` (default ``~/.cache/mtf_switch``). Held-out rule of
every text-file task: every 20th line of each file is the validation split (``tasks.lines``).
Your own files: ``register_text_file_task``, ``register_text_files_mixture``,
``cached_vocabulary`` / ``train_sentencepiece`` (CLI: ``python -m tasks.build_vocab``); from gin
alone: the ``text_files`` task (``tasks.gin_text_files``), e.g.
``--gin_param='MIXTURE_NAME = "text_files"' --gin_param='text_files.paths = ["my.txt"]'``.
"""

from mtf_base import compat  # noqa: F401  (must precede every t5 / mesh_tensorflow import)

# isort: split
from tasks import benchmark_tasks
from tasks.c4 import TASK_NAME as C4_TASK
from tasks.c4 import register_c4_task
from tasks.default_corpus import (
  default_corpus_vocabulary,
  ensure_default_corpus,
  register_default_corpus_tasks,
  write_default_corpus,
)
from tasks.finetune_vocabulary import register_from_gin as register_finetune_vocabulary_from_gin
from tasks.fortunes import register_fortunes
from tasks.gin_text_files import register_from_gin as register_text_files_from_gin
from tasks.glue import (
  GLUE_MIXTURE,
  SUPER_GLUE_MIXTURE,
  register_glue_mixtures,
  register_sst2_tsv_task,
)
from tasks.lines import HOLDOUT_EVERY, scan_text_file
from tasks.mc4 import MIXTURE_NAME as MC4_MIXTURE
from tasks.mc4 import register_mc4
from tasks.mixing import temperature_mixing_rates, temperature_rate_fn
from tasks.objectives import FULL_LM, OBJECTIVES, PREFIX_LM, SPAN_CORRUPTION
from tasks.shared_data import (
  DOCS_TASKS,
  ENGLISH_TASKS,
  FORTUNES_MIXTURE,
  PYDOCS_TASK,
  SST2_T5_VOCAB_TASK,
  SST2_TASK,
  register_shared_data_tasks,
)
from tasks.text_files import register_text_file_task, register_text_files_mixture
from tasks.vocab import cached_vocabulary, train_sentencepiece

DEFAULT_CORPUS_TASK = f"switch_default_corpus_{SPAN_CORRUPTION}"


def register_all(cache_dir=None, data_dir=None) -> None:
  """Registers every task and mixture, keeping names already registered (so it is idempotent).

  t5's GLUE and SuperGLUE tasks are first pointed at the official files when they are present
  (``tasks.benchmark_tasks``), so the mixtures are built over those tasks.
  """
  register_c4_task(replace=False)
  register_mc4(replace=False)
  local = benchmark_tasks.configured_directories()
  if any(benchmark_tasks.local_directory(b) != d for b, d in local.items() if d):
    benchmark_tasks.use_benchmark_files(local)
    register_glue_mixtures(replace=True)
  else:
    register_glue_mixtures(replace=False)
  register_default_corpus_tasks(cache_dir, replace=False)
  register_shared_data_tasks(data_dir, cache_dir, replace=False)


register_all()

__all__ = [
    "C4_TASK", "DEFAULT_CORPUS_TASK", "DOCS_TASKS", "ENGLISH_TASKS", "FORTUNES_MIXTURE", "FULL_LM", "GLUE_MIXTURE",
    "HOLDOUT_EVERY", "MC4_MIXTURE", "OBJECTIVES", "PREFIX_LM", "PYDOCS_TASK", "SPAN_CORRUPTION",
    "SST2_T5_VOCAB_TASK", "SST2_TASK", "SUPER_GLUE_MIXTURE", "cached_vocabulary",
    "default_corpus_vocabulary", "ensure_default_corpus", "register_all", "register_c4_task",
    "register_default_corpus_tasks", "register_fortunes", "register_glue_mixtures",
    "register_mc4", "register_shared_data_tasks", "register_sst2_tsv_task",
    "register_finetune_vocabulary_from_gin", "register_text_file_task",
    "register_text_files_from_gin", "register_text_files_mixture",
    "scan_text_file",
    "temperature_mixing_rates", "temperature_rate_fn", "train_sentencepiece",
    "write_default_corpus",
]
