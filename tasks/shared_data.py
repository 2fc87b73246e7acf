"""Tasks over the shared data directory (``../shared/data`` from the repository root).

The data is never copied into the project: tasks read it where it is. Only the files present
are registered, so a machine without the directory simply lacks these tasks.

  switch_sst2_tsv                  glue/SST-2/{train,dev}.tsv, default-corpus vocabulary
  switch_sst2_tsv_t5_vocab         the same with T5's vocabulary (glue_sst2_v002's features)
  switch_pydocs_span_corruption    text/en_pydocs.txt, default-corpus vocabulary
  switch_docs_span_corruption      text/en_pydocs.txt + text/en_kerneldocs.txt (19 MB of
                                   documentation prose), default-corpus vocabulary
  switch_docs_full_lm              the same files, decoder-only language modelling (full_lm)
  switch_english_full_lm           every file of text/ (Python, Linux kernel, Perl and
                                   PostgreSQL documentation, Shakespeare: 31 MB of English),
                                   decoder-only language modelling; the headline run's corpus
  switch_english_span_corruption   the same files, span corruption
  switch_fortunes_span_corruption  multilingual/fortunes_*.txt mixture (tasks.fortunes)

The default-corpus vocabulary is shared so that a model pre-trained on the default corpus or the
Python docs can be fine-tuned on SST-2 without any download.
"""

import os
from typing import Optional

from absl import logging

from tasks import default_corpus, fortunes, glue, objectives, registry, text_files
from tasks import paths as paths_lib

SST2_TASK = glue.SST2_TASK
SST2_T5_VOCAB_TASK = f"{glue.SST2_TASK}_t5_vocab"
PYDOCS_TASK = "switch_pydocs_span_corruption"
PYDOCS_FILE = os.path.join("text", "en_pydocs.txt")
KERNELDOCS_FILE = os.path.join("text", "en_kerneldocs.txt")
# The expert-scaling corpus (tools/repro_expert_scaling.py): both documentation files, one task
# per objective, so a model of either kind reads the same documents in the same order.
DOCS_FILES = (PYDOCS_FILE, KERNELDOCS_FILE)
DOCS_INTERLEAVE_SEED = 2101_03961
DOCS_TASKS = {objectives.SPAN_CORRUPTION: "switch_docs_span_corruption",
              objectives.FULL_LM: "switch_docs_full_lm"}
# The headline run's corpus (tools/repro_speedup.py): all the English text, so that the dense
# model's 4x longer run makes as few passes as the shared data allows.
ENGLISH_FILES = (PYDOCS_FILE, KERNELDOCS_FILE, os.path.join("text", "en_perldocs.txt"),
                 os.path.join("text", "en_pgdocs.txt"),
                 os.path.join("text", "en_tinyshakespeare.txt"))
ENGLISH_TASKS = {objectives.SPAN_CORRUPTION: "switch_english_span_corruption",
                 objectives.FULL_LM: "switch_english_full_lm"}
FORTUNES_MIXTURE = fortunes.MIXTURE_NAME


def register_shared_data_tasks(data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                               *, validate: bool = False, replace: bool = True) -> list[str]:
  """Registers the tasks whose files are present in the shared data directory.

  Args:
    data_dir: the shared data directory; default ``../shared/data`` from the repository root.
    cache_dir: where vocabularies are cached (see ``tasks.paths.cache_dir``).
    validate: check the files' contents now (else on first use).
    replace: replace tasks already registered under these names (else keep them).

  Returns:
    The task and mixture names registered; absent files are skipped (and logged).
  """
  root = paths_lib.shared_data_dir(data_dir)
  vocabulary = default_corpus.default_corpus_vocabulary(cache_dir)
  names = []
  if all((root / "glue" / "SST-2" / f).is_file() for f in glue.SST2_FILES.values()):
    glue.register_sst2_tsv_task(SST2_TASK, root, vocabulary, validate=validate, replace=replace)
    glue.register_sst2_tsv_task(SST2_T5_VOCAB_TASK, root, validate=validate, replace=replace)
    names += [SST2_TASK, SST2_T5_VOCAB_TASK]
  pydocs = root / PYDOCS_FILE
  if pydocs.is_file():
    source = text_files.TextLinesDataSource([pydocs], validate=validate)
    registry.add_task(PYDOCS_TASK, replace=replace, **text_files.text_task_kwargs(
        source, vocabulary, objectives.SPAN_CORRUPTION))
    names.append(PYDOCS_TASK)
  for files, tasks_by_objective in ((DOCS_FILES, DOCS_TASKS), (ENGLISH_FILES, ENGLISH_TASKS)):
    paths = [root / f for f in files]
    if not all(p.is_file() for p in paths):
      continue
    source = text_files.TextLinesDataSource(paths, validate=validate,
                                            interleave_seed=DOCS_INTERLEAVE_SEED)
    for objective, name in tasks_by_objective.items():
      registry.add_task(name, replace=replace,
                        **text_files.text_task_kwargs(source, vocabulary, objective))
      names.append(name)
  if all(os.path.isfile(p) for p in fortunes.fortunes_paths(root).values()):
    fortunes.register_fortunes(root, cache_dir=cache_dir, validate=validate, replace=replace)
    names.append(FORTUNES_MIXTURE)
  if not names:
    logging.info("No shared data under %s: its tasks are not registered", root)
  return names
