"""Tasks for the end-to-end CLI tests, registered on import from files the tests write.

E2E_DIR holds ``corpus.txt`` (one document per line), ``glue/SST-2/{train,dev}.tsv`` and the
vocabulary cache, and may hold ``languages/{name}.txt`` files, which become the tasks
``e2e_lang_{name}`` and their temperature-sampled mixture ``e2e_languages``. The CLI imports
this module with ``--module_import=tests.e2e.e2e_tasks``.
"""

import os

import tasks

E2E_DIR = os.environ["E2E_DIR"]
VOCABULARY = tasks.cached_vocabulary(os.path.join(E2E_DIR, "corpus.txt"),
                                     os.path.join(E2E_DIR, "vocab"), vocab_size=600)
tasks.register_text_file_task("e2e_text_span_corruption", [os.path.join(E2E_DIR, "corpus.txt")],
                              VOCABULARY)
tasks.register_sst2_tsv_task("e2e_sst2", data_dir=E2E_DIR, vocabulary=VOCABULARY)

_LANGUAGES = os.path.join(E2E_DIR, "languages")
if os.path.isdir(_LANGUAGES):
  tasks.register_text_files_mixture(
      "e2e_languages",
      {f"e2e_lang_{name[:-4]}": os.path.join(_LANGUAGES, name)
       for name in sorted(os.listdir(_LANGUAGES)) if name.endswith(".txt")},
      VOCABULARY)
