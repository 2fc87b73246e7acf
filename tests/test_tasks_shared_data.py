"""Tests of the tasks over the shared data directory (../shared/data from the repository root).

They read the real files where they are and are skipped when the directory is absent. They never
build the registered tasks' vocabularies (that would harvest the default corpus or train on 16 MB
of text): examples are checked through twins with a small vocabulary trained here.
"""

import os

import pytest
import seqio

import tasks
from tasks import fortunes, glue, lines, mixing, paths, registry, shared_data
from tasks import vocab as vocab_lib

DATA = paths.shared_data_dir()
PREFIX = "test_tasks_shared_"

pytestmark = pytest.mark.skipif(
    not (DATA / "SOURCES.md").is_file(),
    reason=f"shared data directory {DATA} is absent (it lives beside the repository)")

# Training documents per fortunes file (non-blank lines minus every 20th line).
FORTUNES_TRAIN = {"cs": 6856, "de": 17379, "en": 12510, "es": 9020, "it": 7783, "pl": 7284,
                  "pt": 2275, "ru": 18452, "zh": 2877}


@pytest.fixture(scope="module", autouse=True)
def _unregister_test_tasks():
  yield
  registry.remove(*[n for n in list(seqio.TaskRegistry.names()) if n.startswith(PREFIX)])


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory) -> seqio.Vocabulary:
  """A small vocabulary trained on SST-2's dev sentences (the first column only)."""
  directory = tmp_path_factory.mktemp("vocab")
  text = directory / "sst2_dev.txt"
  with open(DATA / "glue" / "SST-2" / "dev.tsv", encoding="utf-8") as f:
    next(f)
    text.write_text("".join(row.split("\t")[0] + "\n" for row in f) + "positive negative\n")
  model = vocab_lib.train_sentencepiece(str(text), str(directory / "spm"), 1000)
  return seqio.SentencePieceVocabulary(model, extra_ids=100)


def test_shared_tasks_are_registered():
  for name in (tasks.SST2_TASK, tasks.SST2_T5_VOCAB_TASK, tasks.PYDOCS_TASK):
    assert name in seqio.TaskRegistry.names()
  assert tasks.FORTUNES_MIXTURE in seqio.MixtureRegistry.names()
  t5_vocab_task = seqio.get_mixture_or_task(tasks.SST2_T5_VOCAB_TASK)
  assert t5_vocab_task.output_features["targets"].vocabulary.sentencepiece_model_file == (
      vocab_lib.T5_VOCAB_PATH)


def test_sst2_from_tsv(vocabulary):
  task = tasks.register_sst2_tsv_task(PREFIX + "sst2", vocabulary=vocabulary)
  assert task.source.files["train"] == str(DATA / "glue" / "SST-2" / "train.tsv")
  assert task.num_input_examples("train") == 67_349  # GLUE's official sizes
  assert task.num_input_examples("validation") == 872
  first = next(task.get_dataset({"inputs": 64, "targets": 4}, split="validation",
                                shuffle=False).as_numpy_iterator())
  assert first["inputs_pretokenized"] == (
      b"sst2 sentence: it 's a charming and often affecting journey . ")
  assert first["targets_pretokenized"] == b"positive" and first["idx"] == 0
  assert vocabulary.decode(first["targets"].tolist()) == "positive"
  labels = [ex["label"] for ex in task.source.get_dataset("validation").as_numpy_iterator()]
  assert (labels.count(0), labels.count(1)) == (428, 444)


def test_pydocs_split_sizes():
  stats = lines.scan_text_file(DATA / shared_data.PYDOCS_FILE)
  assert (stats.lines, stats.documents) == (31_066, 31_066)
  assert (stats.train_documents, stats.validation_documents) == (29_513, 1_553)
  task = seqio.get_mixture_or_task(tasks.PYDOCS_TASK)
  assert task.num_input_examples("validation") == 1_553


def test_docs_tasks_read_both_files():
  """The expert-scaling corpus: both documentation files, interleaved, for either objective."""
  stats = [lines.scan_text_file(DATA / f) for f in shared_data.DOCS_FILES]
  for objective, name in tasks.DOCS_TASKS.items():
    task = seqio.get_mixture_or_task(name)
    assert task.num_input_examples("validation") == sum(s.validation_documents for s in stats)
    assert ("inputs" in task.output_features) == (objective != tasks.FULL_LM)
  source = seqio.get_mixture_or_task(tasks.DOCS_TASKS[tasks.SPAN_CORRUPTION]).source
  assert [os.path.basename(p) for p in source.paths] == ["en_pydocs.txt", "en_kerneldocs.txt"]
  first = [ex["text"].decode() for ex in source.get_dataset("validation").take(200)
           .as_numpy_iterator()]
  kernel = set(lines.iter_documents(DATA / shared_data.KERNELDOCS_FILE, "validation"))
  assert 0 < sum(d in kernel for d in first) < 200  # both files from the start


def test_english_tasks_read_all_five_files():
  """The headline run's corpus: every English text file, interleaved from the start."""
  stats = [lines.scan_text_file(DATA / f) for f in shared_data.ENGLISH_FILES]
  for objective, name in tasks.ENGLISH_TASKS.items():
    task = seqio.get_mixture_or_task(name)
    assert task.num_input_examples("validation") == sum(s.validation_documents for s in stats)
    assert task.num_input_examples("train") == sum(s.train_documents for s in stats)
    assert ("inputs" in task.output_features) == (objective != tasks.FULL_LM)
  source = seqio.get_mixture_or_task(tasks.ENGLISH_TASKS[tasks.FULL_LM]).source
  assert sorted(os.path.basename(p) for p in source.paths) == sorted(
      os.listdir(DATA / "text"))  # all the English text the shared data holds
  first = [ex["text"].decode() for ex in source.get_dataset("train").take(2000)
           .as_numpy_iterator()]
  perl = set(lines.iter_documents(DATA / "text" / "en_perldocs.txt", "train"))
  assert 0 < sum(d in perl for d in first) < 2000  # interleaved, not one file after another


def test_fortunes_mixture_rates():
  mixture = seqio.get_mixture_or_task(tasks.FORTUNES_MIXTURE)
  counts = {t.name[len("switch_fortunes_"):]: t.num_input_examples("train")
            for t in mixture.tasks}
  assert counts == FORTUNES_TRAIN
  rates = {name[len("switch_fortunes_"):]: rate
           for name, rate in mixing.mixture_rates(mixture).items()}
  assert rates == pytest.approx(mixing.temperature_mixing_rates(FORTUNES_TRAIN, 0.3))
  # alpha=0.3 flattens the sizes: ru has 8.1x pt's documents but is sampled only 1.9x as often.
  assert rates["ru"] == pytest.approx(0.1417, abs=5e-5)
  assert rates["pt"] == pytest.approx(0.0756, abs=5e-5)


def test_fortunes_sources_read_every_language():
  mixture = seqio.get_mixture_or_task(tasks.FORTUNES_MIXTURE)
  assert {t.name for t in mixture.tasks} == {f"switch_fortunes_{lang}"
                                              for lang in fortunes.LANGUAGES}
  zh = seqio.get_mixture_or_task("switch_fortunes_zh").source
  first = next(zh.get_dataset("validation", shuffle=False).as_numpy_iterator())["text"]
  assert first.decode("utf-8") == list(lines.iter_documents(zh.paths[0], "validation"))[0]
  assert any("\u4e00" <= ch <= "\u9fff" for ch in first.decode("utf-8"))  # CJK characters
  assert glue.SST2_FILES == {"train": "train.tsv", "validation": "dev.tsv"}
