"""Shared pytest set-up: the compat repair runs before any test imports mesh_tensorflow, the
test tiers and the order the files are handed to the workers are decided here, and the
session's one pre-trained command-line model (``pretrained``) is built here.

Two tiers (README "Set up and test"):

    pytest                  the whole suite (what CI runs)
    pytest -m "not slow"    the fast tier: unit, parity and layout tests, no command-line runs

A test is slow when it carries ``@pytest.mark.slow`` itself, when it lives in one of the
SLOW_FILES below (files whose every test starts ``switch_mesh_transformer`` (TensorFlow) in a
subprocess, or trains models through the reproduction scripts), or when SLOW_TESTS names it.
Marking them here, by file, keeps the tier decision in one place: a test file needs no edit to
join a tier.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mtf_base import compat  # noqa: E402,F401

# Each of these files' tests runs the command line in subprocesses (tens of seconds each).
# Longest first: the whole suite hands them out first (see below). The files that start from
# the session's pre-trained checkpoint (the ``pretrained`` fixture) come after
# test_cli_end_to_end.py, which builds it, and after the long files that do not need it, so
# that under two workers the other worker rarely waits for it.
SLOW_FILES = (
    "test_cli_end_to_end.py",   # builds the pre-training (train, SIGKILL, resume); 3 more runs
    "test_repro_scripts.py",    # 8 command-line runs through the repro scripts
    "test_hf_roundtrip.py",     # 2 runs (an imported model fine-tuned), then export from it
    "test_cli_bfloat16_and_preflight.py",  # 4 command-line runs (dtype, pre-flight)
    "test_cli_finetune_glue.py",  # 6 runs from it (GLUE and SuperGLUE: train, eval, infer)
    "test_cli_distill.py",      # 2 runs from it
    "test_cli_init_seed.py",    # 1 run, stopped at its first checkpoint
    "test_compat_and_cli.py",   # 3 Python / command-line start-ups
)

# Files without command-line runs that still take minutes (graphs built in-process, models
# trained in-process), longest first: handed out right after SLOW_FILES, so that none of them
# starts last. Order only: their tests keep their tier.
LONG_FILES = (
    "test_tpu_graphs.py",
    "test_gin_models.py",
    "test_layouts.py",
    "test_gather_dispatch.py",
    "test_table9.py",
    "test_hf_parity.py",
)

# Single tests (every parametrisation) that train a whole model in-process for several steps,
# about 20-30 s of CPU each: "file::function".
SLOW_TESTS = frozenset({
    "test_gin_models.py::test_cpu_model_trains_from_its_gin_file",
})


def pytest_collection_modifyitems(config, items):
  """Marks the SLOW_FILES' tests slow, and moves those files, then the LONG_FILES, to the front.

  pytest-xdist (``--dist loadfile``, with the scheduler below) hands whole files to the
  workers in collection order, so the long command-line files start first and the many short
  files fill in around them; in collection order (alphabetical) a long file that starts last
  is the run's tail. Tests keep their order within a file.
  """
  del config  # the tiers do not depend on options
  rank = {name: i for i, name in enumerate(SLOW_FILES + LONG_FILES)}
  for item in items:
    if item.path.name in SLOW_FILES or f"{item.path.name}::{item.originalname}" in SLOW_TESTS:
      item.add_marker(pytest.mark.slow)
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
  """``--dist loadfile`` that hands out the files in collection order (slow files first).

  pytest-xdist's own loadfile scheduler (3.x) re-sorts the files by their number of tests,
  most first, so the command-line files, which have few tests each but take minutes, would
  start last and make the run's tail. This one keeps the order pytest_collection_modifyitems
  gives; everything else is xdist's.
  """
  if config.getoption("dist") != "loadfile":
    return None
  from xdist.scheduler import LoadFileScheduling

  class CollectionOrderScheduling(LoadFileScheduling):
    def _assign_work_unit(self, node):
      if not getattr(self, "_in_collection_order", False):
        first_seen = {}
        for nodeid in self.collection:
          first_seen.setdefault(self._split_scope(nodeid), len(first_seen))
        ordered = sorted(self.workqueue.items(), key=lambda unit: first_seen[unit[0]])
        self.workqueue.clear()
        self.workqueue.update(ordered)
        self._in_collection_order = True
      super()._assign_work_unit(node)

  return CollectionOrderScheduling(config, log)


@pytest.fixture(autouse=True, scope="module")
def _fresh_gin_config_per_file():
  """Every test file starts and ends with no gin bindings.

  Helpers such as ``mtf_switch.gin_files.parse_gin`` (used by tools/table9.py and
  mtf_switch.convert) parse gin files into gin's one global config; a binding one file leaves behind (an imported HF model's
  ``SwitchFFN.z_loss_coef``, say) would otherwise reach the layers the next file in the same
  worker builds without gin.
  """
  import gin

  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
  """The tiny Switch model of tests/e2e, pre-trained once per session by the command line.

  tests/e2e/cli.py ``pretrain``: trained from a seeded initialisation, SIGKILLed at a
  checkpoint, resumed on the two-language mixture. Built by the first worker that asks, read
  by the others (``cli.shared_once``). {"workdir", "model_dir" (paths), "before", "after"
  (checkpoint steps after the kill and after the rerun), "resume_log"}. Tests only read the
  model directory; each writes its own runs in directories of its own under workdir.
  """
  import pathlib

  from tests.e2e import cli

  result = cli.shared_once(tmp_path_factory, "e2e_pretrained",
                           lambda directory: cli.pretrain(cli.make_workdir(directory)))
  return {**result, "workdir": pathlib.Path(result["workdir"]),
          "model_dir": pathlib.Path(result["model_dir"])}


@pytest.fixture(scope="module")
def glue_vocabulary(tmp_path_factory):
  """A tiny SentencePiece vocabulary of GLUE's words, trained here: GLUE tasks rebuilt with it
  need neither T5's vocabulary file nor the network."""
  import seqio

  from tasks import vocab as vocab_lib

  path = tmp_path_factory.mktemp("glue_vocab") / "text.txt"
  path.write_text("the a of sentence premise hypothesis question answer rte mrpc cola\n" * 100)
  return seqio.SentencePieceVocabulary(
      vocab_lib.train_sentencepiece(str(path), str(path.parent / "spm"), 28), extra_ids=100)
