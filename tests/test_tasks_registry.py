"""Tests of the registered C4, mC4 and GLUE tasks and of SST-2 read from TSV files.

TFDS data is replaced by ``tfds.testing.mock_data`` (random records with the real features);
T5's and mT5's vocabularies live on GCS and must never be loaded, so preprocessing is checked with
twins of the tasks built by the same functions with a small vocabulary trained here.
"""

import random
import re

import pytest
import seqio
import tensorflow_datasets as tfds
from t5.data import glue_utils
from t5.evaluation import metrics

import tasks
from tasks import benchmark_tasks, c4, glue, mc4, mixing, registry
from tasks import vocab as vocab_lib

PREFIX = "test_tasks_registry_"


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory) -> seqio.Vocabulary:
  """A small vocabulary covering the mock records' letters a-j and SST-2-like text."""
  rng = random.Random(0)
  words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 6)))
           for _ in range(300)]
  words += "it 's a charming and often affecting journey . positive negative".split()
  path = tmp_path_factory.mktemp("vocab") / "text.txt"
  path.write_text("".join(" ".join(rng.choice(words) for _ in range(20)) + "\n"
                          for _ in range(300)))
  model = vocab_lib.train_sentencepiece(str(path), str(path.parent / "spm"), 200)
  return seqio.SentencePieceVocabulary(model, extra_ids=100)


@pytest.fixture(scope="module", autouse=True)
def _unregister_test_tasks():
  yield
  registry.remove(*[n for n in list(seqio.MixtureRegistry.names()) if n.startswith(PREFIX)])
  registry.remove(*[n for n in list(seqio.TaskRegistry.names()) if n.startswith(PREFIX)])


def test_import_registers_everything_without_loading_vocabularies():
  for name in (tasks.C4_TASK, tasks.DEFAULT_CORPUS_TASK, "switch_default_corpus_prefix_lm",
               "switch_default_corpus_full_lm"):
    assert name in seqio.TaskRegistry.names()
  for name in (tasks.MC4_MIXTURE, tasks.GLUE_MIXTURE, tasks.SUPER_GLUE_MIXTURE):
    assert name in seqio.MixtureRegistry.names()
  c4_vocab = seqio.get_mixture_or_task(tasks.C4_TASK).output_features["targets"].vocabulary
  assert c4_vocab.sentencepiece_model_file == vocab_lib.T5_VOCAB_PATH
  mc4_task = seqio.get_mixture_or_task("switch_mc4_ru_Latn")
  assert mc4_task.output_features["targets"].vocabulary.sentencepiece_model_file == (
      vocab_lib.MT5_VOCAB_PATH)
  default_task = seqio.get_mixture_or_task(tasks.DEFAULT_CORPUS_TASK)
  for task in (seqio.get_mixture_or_task(tasks.C4_TASK), mc4_task, default_task):
    vocabulary = task.output_features["targets"].vocabulary
    assert vocabulary._model is None  # pylint: disable=protected-access


def test_c4_records_and_span_corruption_on_mock_data(vocabulary):
  registered = seqio.get_mixture_or_task(tasks.C4_TASK)
  assert registered.source.tfds_dataset.name == "c4/en:2.2.0"
  twin = tasks.register_c4_task(PREFIX + "c4", vocabulary)  # same source and preprocessors
  with tfds.testing.mock_data(num_examples=12):
    record = next(registered.source.get_dataset("train", shuffle=False).as_numpy_iterator())
    assert set(record) == {"text", "url", "content-type", "content-length", "timestamp"}
    assert isinstance(record["text"], bytes)
    # (Mock data has no split sizes, which seqio's in-memory caching decision reads.)
    examples = list(twin.get_dataset({"inputs": 32, "targets": 8}, split="validation",
                                     shuffle=False, try_in_mem_cache=False).as_numpy_iterator())
  assert examples
  for ex in examples:
    assert 0 < len(ex["inputs"]) <= 32 and 0 < len(ex["targets"]) <= 8
    assert ex["targets"][0] >= vocabulary.vocab_size - 100  # targets start with a sentinel


def test_mc4_tasks_sources_and_temperature_rates(vocabulary):
  assert len(mc4.MC4_LANGUAGES) == 107  # 101 languages + 6 romanised variants (e.g. ru-Latn)
  mixture = seqio.get_mixture_or_task(tasks.MC4_MIXTURE)
  assert len(mixture.tasks) == 107
  source = seqio.get_mixture_or_task("switch_mc4_de").source
  assert source.tfds_dataset.name == "c4/multilingual:3.1.0"

  class FakeTask:  # what seqio's rate function reads from a task
    cache_dir = None

    def __init__(self, n):
      self.name, self._n = f"fake{n}", n

    def num_input_examples(self, split):
      assert split == "train"
      return self._n

  rate = mixture.rate_per_task_name["switch_mc4_de"]
  assert rate(FakeTask(1_000_000)) == pytest.approx(63.0957, abs=1e-4)  # 1e6 ** 0.3
  assert rate(FakeTask(10_000)) == pytest.approx(15.8489, abs=1e-4)  # 1e4 ** 0.3

  twin = tasks.register_mc4(vocabulary, ["de", "zh-Latn"], prefix=PREFIX + "mc4",
                            mixture_name=PREFIX + "mc4_mix")
  assert sorted(t.name for t in twin.tasks) == [PREFIX + "mc4_de", PREFIX + "mc4_zh_Latn"]
  with tfds.testing.mock_data(num_examples=6):
    # "validation" maps to TFDS's "{lang}-validation" split.
    ds = seqio.get_mixture_or_task(PREFIX + "mc4_zh_Latn").get_dataset(
        {"inputs": 32, "targets": 8}, split="validation", shuffle=False, try_in_mem_cache=False)
    ex = next(ds.as_numpy_iterator())
  assert len(ex["inputs"]) <= 32
  with pytest.raises(ValueError, match=re.escape("Not mC4 languages: ['xx']")):
    tasks.register_mc4(vocabulary, ["de", "xx"])


def test_glue_mixtures_are_t5s_proportional_mixtures():
  """With t5's TFDS sources (here the official files are usually present and read instead: see
  test_tasks_glue_benchmark.py), the mixtures hold every task of t5's weight mappings."""
  local = {b: benchmark_tasks.local_directory(b) for b in ("glue", "super_glue")}
  try:
    benchmark_tasks.use_tfds()
    tasks.register_glue_mixtures(replace=True)
    glue_mix = seqio.get_mixture_or_task(tasks.GLUE_MIXTURE)
    weights = glue_utils.get_glue_weight_mapping()
    assert {t.name for t in glue_mix.tasks} == set(weights)
    sst2 = seqio.get_mixture_or_task("glue_sst2_v002")
    assert glue_mix.get_rate(sst2) == 67_349.0
    super_mix = seqio.get_mixture_or_task(tasks.SUPER_GLUE_MIXTURE)
    assert {t.name for t in super_mix.tasks} == set(glue_utils.get_super_glue_weight_mapping())
    assert super_mix.get_rate(seqio.get_mixture_or_task("super_glue_boolq_v102")) == 9_427.0
  finally:
    benchmark_tasks.use_benchmark_files(local)
    tasks.register_glue_mixtures(replace=True)


def _write_sst2(root, train_rows, dev_rows, header="sentence\tlabel"):
  directory = root / "glue" / "SST-2"
  directory.mkdir(parents=True, exist_ok=True)
  for name, rows in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
    (directory / name).write_text(
        header + "\n" + "".join(f"{s}\t{label}\n" for s, label in rows), encoding="utf-8")
  return directory


def test_sst2_tsv_matches_glue_sst2_v002(tmp_path, vocabulary):
  _write_sst2(tmp_path, [("it 's a charming and often affecting journey . ", 1),
                         ("a bleak journey ", 0), ("charming ", 1)],
              [("often affecting ", 1), ("bleak and desperate ", 0)])
  task = tasks.register_sst2_tsv_task(PREFIX + "sst2", str(tmp_path), vocabulary)
  assert (task.num_input_examples("train"), task.num_input_examples("validation")) == (3, 2)
  t5_task = seqio.get_mixture_or_task("glue_sst2_v002")
  ours, theirs = task.preprocessors[0], t5_task.preprocessors[0]
  assert (ours.func, ours.keywords) == (theirs.func, theirs.keywords)
  assert task.metric_fns == [metrics.accuracy] == t5_task.metric_fns

  record = next(task.source.get_dataset("train", shuffle=False).as_numpy_iterator())
  assert record == {"sentence": b"it 's a charming and often affecting journey . ", "label": 1,
                    "idx": 0}
  examples = list(task.get_dataset({"inputs": 64, "targets": 4}, split="validation",
                                   shuffle=False).as_numpy_iterator())
  assert [(ex["inputs_pretokenized"], ex["targets_pretokenized"], ex["idx"])
          for ex in examples] == [(b"sst2 sentence: often affecting ", b"positive", 0),
                                  (b"sst2 sentence: bleak and desperate ", b"negative", 1)]
  assert vocabulary.decode(examples[0]["targets"].tolist()) == "positive"
  assert [task.postprocess_fn(label) for label in ("negative", "positive", "neutral")] == [
      0, 1, -1]


def test_sst2_tsv_errors_name_the_file(tmp_path, vocabulary):
  missing = tmp_path / "none"
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "glue" / "SST-2"))):
    tasks.register_sst2_tsv_task(PREFIX + "bad", str(missing), vocabulary)
  directory = _write_sst2(tmp_path / "header", [("a", 1)], [("b", 0)], header="text\tlabel")
  with pytest.raises(ValueError, match=re.escape(str(directory / "train.tsv")) +
                     ".* must start with the header"):
    tasks.register_sst2_tsv_task(PREFIX + "bad", str(tmp_path / "header"), vocabulary)
  directory = _write_sst2(tmp_path / "label", [("a", 1), ("b", 2)], [("c", 0)])
  with pytest.raises(ValueError, match=re.escape(repr(str(directory / "train.tsv"))) + ", line 3"):
    tasks.register_sst2_tsv_task(PREFIX + "bad", str(tmp_path / "label"), vocabulary)
  assert PREFIX + "bad" not in seqio.TaskRegistry.names()


def test_mixing_rate_function_checks_alpha():
  with pytest.raises(ValueError, match="alpha must be in"):
    mixing.temperature_rate_fn(1.5)
  assert c4.C4_TFDS_NAME == "c4/en:2.2.0" and glue.SST2_LABELS == ("negative", "positive")
