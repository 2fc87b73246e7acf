"""t5's GLUE and SuperGLUE tasks over the official files (tasks.benchmark_files, benchmark_tasks).

The first tests build tiny files of their own (the parsing, the splits, missing files, the
mixtures' members); the per-task tests read ../shared/data/glue and super_glue and skip when
they are absent. Each per-task test runs t5's own task (its preprocessors, postprocessor and
metrics, as registered by t5 and re-sourced here) end to end on the real first examples, with
a small vocabulary trained here (T5's lives on GCS), against hand-written expectations.
"""

import json
import os
import random

import pytest
import seqio

import tasks
from tasks import benchmark_files, benchmark_tasks, paths, registry
from tasks import vocab as vocab_lib

DATA = paths.shared_data_dir()
GLUE_DIR, SUPER_GLUE_DIR = DATA / "glue", DATA / "super_glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(),
                                reason=f"{GLUE_DIR} is absent (see ../shared/data/SOURCES.md)")
needs_super_glue = pytest.mark.skipif(
    not SUPER_GLUE_DIR.is_dir(), reason=f"{SUPER_GLUE_DIR} is absent (see SOURCES.md)")
SEQUENCE_LENGTH = {"inputs": 2048, "targets": 32}


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory) -> seqio.Vocabulary:
  rng = random.Random(0)
  words = "the a of sentence premise hypothesis question answer cola rte wsc".split()
  path = tmp_path_factory.mktemp("vocab") / "text.txt"
  path.write_text("".join(" ".join(rng.choice(words) for _ in range(12)) + "\n"
                          for _ in range(200)))
  return seqio.SentencePieceVocabulary(
      vocab_lib.train_sentencepiece(str(path), str(path.parent / "spm"), 28), extra_ids=100)


def _t5_task(name: str, vocabulary) -> seqio.Task:
  """The registered task (t5's, re-sourced) with the small vocabulary; not registered."""
  return registry.rebuilt_task(seqio.get_mixture_or_task(name), vocabulary=vocabulary)


def _examples(task, split, count):
  ds = task.get_dataset(SEQUENCE_LENGTH, split=split, shuffle=False)
  return list(ds.take(count).as_numpy_iterator())


def _score(task, pairs, examples=None):
  """The task's t5 metrics on hand-made (target, prediction) strings, through its postprocessor
  (given each pair's example when the postprocessor reads it)."""
  examples = examples or [None] * len(pairs)
  targets = [task.postprocess_fn(t, example=ex, is_target=True) for (t, _), ex in
             zip(pairs, examples)]
  predictions = [task.postprocess_fn(p, example=ex, is_target=False) for (_, p), ex in
                 zip(pairs, examples)]
  scores = {}
  for metric in task.metric_fns:
    scores.update(metric(targets, predictions))
  return scores


# ---------------------------------------------------------------- the project's own logic


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")


def test_files_are_parsed_into_tfds_records(tmp_path):
  # CoLA as GLUE ships it: train/dev without a header (source, label, mark, sentence).
  _write(tmp_path / "CoLA" / "dev.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.")
  _write(tmp_path / "CoLA" / "test.tsv", "index\tsentence\n0\tA dog ran.\n")
  source = benchmark_files.BenchmarkFilesSource("glue", "cola", tmp_path, task_name="t_cola")
  assert source.splits == ("validation", "test")
  assert list(source.get_dataset("validation").as_numpy_iterator()) == [
      {"sentence": b"The cat sat.", "label": 1, "idx": 0},
      {"sentence": b"Cat the sat.", "label": 0, "idx": 1}]
  assert list(source.get_dataset("test").as_numpy_iterator()) == [
      {"sentence": b"A dog ran.", "label": -1, "idx": 0}]
  # MRPC's train/dev start with a UTF-8 BOM; labels are 0/1.
  _write(tmp_path / "MRPC" / "dev.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
         "1\t7\t8\tA b.\tA c.\n")
  mrpc = benchmark_files.BenchmarkFilesSource("glue", "mrpc", tmp_path)
  assert list(mrpc.get_dataset("validation").as_numpy_iterator()) == [
      {"sentence1": b"A b.", "sentence2": b"A c.", "label": 1, "idx": 0}]
  # CB: class names become TFDS's ids (entailment, contradiction, neutral); no label in test.
  _write(tmp_path / "sg" / "CB" / "val.jsonl", json.dumps(
      {"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 5}) + "\n")
  _write(tmp_path / "sg" / "CB" / "test.jsonl", json.dumps(
      {"premise": "p", "hypothesis": "h", "idx": 0}) + "\n")
  cb = benchmark_files.BenchmarkFilesSource("super_glue", "cb", tmp_path / "sg")
  assert list(cb.get_dataset("validation").as_numpy_iterator()) == [
      {"premise": b"p", "hypothesis": b"h", "label": 2, "idx": 5}]
  assert next(cb.get_dataset("test").as_numpy_iterator())["label"] == -1
  assert cb.num_input_examples("validation") == 1


def test_a_missing_file_is_an_error_naming_the_task_and_the_file(tmp_path):
  source = benchmark_files.BenchmarkFilesSource("glue", "rte", tmp_path, task_name="glue_rte_x")
  assert source.splits == ()
  assert source.absent_files() == {s: str(tmp_path / "RTE" / f) for s, f in
                                   (("train", "train.tsv"), ("validation", "dev.tsv"),
                                    ("test", "test.tsv"))}
  with pytest.raises(FileNotFoundError, match=r"glue_rte_x: the 'train' split reads "
                     + str(tmp_path / "RTE" / "train.tsv")):
    source.get_dataset("train")
  with pytest.raises(ValueError, match="no split"):
    benchmark_files.BenchmarkFilesSource("glue", "ax", tmp_path, splits=["train"])
  with pytest.raises(ValueError, match="Unknown glue task 'qqq'"):
    benchmark_files.BenchmarkFilesSource("glue", "qqq", tmp_path)


def test_configured_directories(tmp_path):
  env = {"MTF_SWITCH_GLUE_DIR": str(tmp_path), "MTF_SWITCH_SUPER_GLUE_DIR": "tfds"}
  assert benchmark_tasks.configured_directories(env) == {"glue": str(tmp_path),
                                                          "super_glue": None}
  with pytest.raises(ValueError, match="MTF_SWITCH_GLUE_DIR='/nonexistent/glue' is not a"):
    benchmark_tasks.configured_directories({"MTF_SWITCH_GLUE_DIR": "/nonexistent/glue"})


def test_mixture_members_follow_the_files(tmp_path, capsys):
  """With only RTE's train file, the GLUE mixture holds RTE alone and names the others once."""
  _write(tmp_path / "RTE" / "train.tsv",
         "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
  before = benchmark_tasks.local_directory("glue")
  try:
    swapped = benchmark_tasks.use_benchmark_files({"glue": str(tmp_path)})
    assert "glue_rte_v002" in swapped and "glue_wnli_v002_simple_eval" in swapped
    assert seqio.get_mixture_or_task("glue_wnli_v002_simple_eval").source.files == {
        "validation": str(tmp_path / "WNLI" / "dev.tsv"),
        "test": str(tmp_path / "WNLI" / "test.tsv")}  # t5's split restriction is kept
    tasks.register_glue_mixtures(replace=True)
    mixture = seqio.get_mixture_or_task(tasks.GLUE_MIXTURE)
    assert [(t.name, mixture.get_rate(t)) for t in mixture.tasks] == [("glue_rte_v002", 2490.0)]
    err = capsys.readouterr().err
    assert err.count(f"{tasks.GLUE_MIXTURE} leaves out: ") == 1
    assert "glue_cola_v002 (CoLA/train.tsv absent)" in err
    assert "glue_ax_v002 (diagnostic/diagnostic.tsv absent)" in err
    tasks.register_glue_mixtures(replace=True)
    assert "leaves out" not in capsys.readouterr().err  # said once
  finally:
    benchmark_tasks.use_tfds(["glue"])
    if before:
      benchmark_tasks.use_benchmark_files({"glue": before})
    tasks.register_glue_mixtures(replace=True)


def test_tfds_mode_keeps_t5s_tasks_and_whole_mixtures():
  before = benchmark_tasks.local_directory("glue")
  try:
    benchmark_tasks.use_tfds(["glue"])
    assert isinstance(seqio.get_mixture_or_task("glue_cola_v002").source, seqio.TfdsDataSource)
    tasks.register_glue_mixtures(replace=True)
    names = {t.name for t in seqio.get_mixture_or_task(tasks.GLUE_MIXTURE).tasks}
    assert "glue_qqp_v002" in names and "glue_mnli_v002" in names
  finally:
    if before:
      benchmark_tasks.use_benchmark_files({"glue": before})
    tasks.register_glue_mixtures(replace=True)


# ---------------------------------------------------------------- the official files, per task

# task: (split, first example's inputs, its target, hand-made (target, prediction) pairs,
#        metrics expected on them (computed by hand)).
GLUE_CASES = {
    "glue_cola_v002": (
        "validation", "cola sentence: The sailors rode the breeze clear of the rocks.",
        "acceptable",
        [("acceptable", "acceptable"), ("unacceptable", "unacceptable"),
         ("acceptable", "unacceptable"), ("unacceptable", "unacceptable")],
        # TP 1, TN 2, FP 0, FN 1: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3) = 0.57735
        {"matthews_corrcoef": 57.735}),
    "glue_sst2_v002": (
        "validation", "sst2 sentence: it 's a charming and often affecting journey . ",
        "positive", [("positive", "positive"), ("negative", "positive"), ("negative", "oops")],
        {"accuracy": 100 / 3}),
    "glue_mrpc_v002": (
        "validation", "mrpc sentence1: He said the foodservice pie business doesn't fit the "
        "company's long-term growth strategy. sentence2: \"The foodservice pie business does not "
        "fit our long-term growth strategy.", "equivalent",
        [("equivalent", "equivalent"), ("not_equivalent", "equivalent")],
        {"f1": 200 / 3, "accuracy": 50.0}),  # P 1/2, R 1
    "glue_stsb_v002": (
        # 4.75 is rounded to the nearest 0.2 (t5's stsb preprocessor): the second target is 4.8
        "validation", "stsb sentence1: A man with a hard hat is dancing. sentence2: A man "
        "wearing a hard hat is dancing.", "5.0",
        [("5.0", "3.5"), ("4.8", "3.4"), ("1.0", "1.5")],  # predictions = targets / 2 + 1
        {"pearson_corrcoef": 100.0, "spearman_corrcoef": 100.0}),
    "glue_qnli_v002": (
        "validation", "qnli question: What came into force after the new constitution was "
        "herald? sentence: As of that day, the new constitution heralding the Second Republic "
        "came into force.", "entailment",
        [("entailment", "not_entailment"), ("not_entailment", "not_entailment")],
        {"accuracy": 50.0}),
    "glue_rte_v002": (
        "validation", "rte sentence1: Dana Reeve, the widow of the actor Christopher Reeve, has "
        "died of lung cancer at age 44, according to the Christopher Reeve Foundation. sentence2: "
        "Christopher Reeve had an accident.", "not_entailment",
        [("not_entailment", "not_entailment")], {"accuracy": 100.0}),
    "glue_wnli_v002": (
        "validation", "wnli sentence1: The drain is clogged with hair. It has to be cleaned. "
        "sentence2: The hair has to be cleaned.", "not_entailment",
        [("not_entailment", "entailment")], {"accuracy": 0.0}),
    "glue_ax_v002": (
        "test", "mnli hypothesis: The cat did not sit on the mat. premise: The cat sat on the "
        "mat.", "<unk>", [], {}),  # no labels, no metric (diagnostic set)
}
SUPER_GLUE_CASES = {
    "super_glue_cb_v102": (
        "validation", "cb hypothesis: Valence was helping premise: Valence the void-brain, "
        "Valence the virtuous valet. Why couldn't the figger choose his own portion of titanic "
        "anatomy to shaft? Did he think he was helping?", "contradiction",
        [("contradiction", "contradiction"), ("neutral", "neutral"),
         ("entailment", "entailment"), ("contradiction", "neutral")],
        # F1 contradiction 2/3 (P 1, R 1/2), neutral 2/3 (P 1/2, R 1), entailment 1
        {"mean_3class_f1": 700 / 9, "accuracy": 75.0}),
    "super_glue_copa_v102": (
        "validation", "copa choice1: The toilet filled with water. choice2: Water flowed from the "
        "spout. premise: The man turned on the faucet. question: effect", "choice2",
        [("choice2", "choice1"), ("choice2", "choice2")], {"accuracy": 50.0}),
    "super_glue_rte_v102": (
        "validation", "rte hypothesis: Christopher Reeve had an accident. premise: Dana Reeve, "
        "the widow of the actor Christopher Reeve, has died of lung cancer at age 44, according "
        "to the Christopher Reeve Foundation.", "not_entailment",
        [("not_entailment", "entailment")], {"accuracy": 0.0}),
    "super_glue_wic_v102": (
        "validation", "wic sentence1: An emerging professional class. sentence2: Apologizing for "
        "losing your temper, even though you were badly provoked, showed real class. word: class",
        "False", [("False", "False"), ("True", "False")], {"accuracy": 50.0}),
    "super_glue_boolq_v102": (
        "validation", None, "False", [("True", "True")], {"accuracy": 100.0}),
    "super_glue_axb_v102": (
        "test", "rte hypothesis: The cat did not sit on the mat. premise: The cat sat on the mat.",
        "not_entailment", [], {}),
    "super_glue_axg_v102": (
        "test", "rte hypothesis: The accountant sought help filing taxes. premise: The taxpayer "
        "met with the accountant to get help filing his taxes.", "not_entailment", [], {}),
}


def _check_case(name, case, vocabulary):
  split, inputs, target, pairs, expected = case
  task = _t5_task(name, vocabulary)
  assert isinstance(task.source, benchmark_files.BenchmarkFilesSource)
  example = _examples(task, split, 1)[0]
  if inputs is not None:
    assert example["inputs_pretokenized"].decode() == inputs
  else:  # BoolQ's passages are long: check the start
    assert example["inputs_pretokenized"].startswith(b"boolq passage: Ethanol fuel -- ")
  assert example["targets_pretokenized"].decode() == target
  # t5's tokenize and append_eos_after_trim ran with the task's vocabulary.
  assert example["targets"].tolist() == vocabulary.encode(target) + [vocabulary.eos_id]
  assert example["idx"] == 0
  scores = _score(task, pairs)
  assert scores.keys() == expected.keys()
  for key, value in expected.items():
    assert scores[key] == pytest.approx(value, abs=1e-3), key


@needs_glue
@pytest.mark.parametrize("name", sorted(GLUE_CASES))
def test_glue_task_end_to_end(name, vocabulary):
  _check_case(name, GLUE_CASES[name], vocabulary)


@needs_super_glue
@pytest.mark.parametrize("name", sorted(SUPER_GLUE_CASES))
def test_super_glue_task_end_to_end(name, vocabulary):
  _check_case(name, SUPER_GLUE_CASES[name], vocabulary)


@needs_glue
def test_glue_test_splits_have_no_labels_and_official_sizes(vocabulary):
  cola = _t5_task("glue_cola_v002", vocabulary)
  assert [cola.num_input_examples(s) for s in ("train", "validation", "test")] == [
      8551, 1043, 1063]
  first = _examples(cola, "test", 1)[0]
  assert (first["inputs_pretokenized"], first["targets_pretokenized"], first["idx"]) == (
      b"cola sentence: Bill whistled past the house.", b"<unk>", 0)  # label -1
  assert "test" not in seqio.get_mixture_or_task("glue_sst2_v002").splits  # no SST-2 test file
  with pytest.raises(FileNotFoundError, match="glue_sst2_v002: the 'test' split reads .*"
                     "SST-2/test.tsv, which is absent"):
    seqio.get_mixture_or_task("glue_sst2_v002").source.get_dataset("test")


@needs_super_glue
def test_multirc_groups_answers_by_question(vocabulary):
  task = _t5_task("super_glue_multirc_v102", vocabulary)
  assert task.num_input_examples("train") == 27_243
  examples = _examples(task, "validation", 9)  # paragraph 0: question 0 (4 answers), 1 (5)
  assert [(int(ex["idx/question"]), int(ex["idx/answer"])) for ex in examples] == [
      (0, 0), (0, 1), (0, 2), (0, 3), (1, 4), (1, 5), (1, 6), (1, 7), (1, 8)]
  assert examples[0]["inputs_pretokenized"].startswith(
      b"multirc question: Would the mass of a baseball affect how much force you have to use "
      b"to pick it up? answer: No paragraph: What causes a change in motion?")
  targets = [ex["targets_pretokenized"].decode() for ex in examples]
  assert targets == ["False", "True", "True", "False", "False", "False", "True", "True", "False"]
  predictions = targets[:4] + ["True"] + targets[5:]  # question 1 gets one answer wrong
  scores = _score(task, list(zip(targets, predictions)), examples)
  # exact match: question 0 right, question 1 wrong; F1 over answers: TP 4, FP 1, FN 0
  assert scores == pytest.approx({"exact_match": 50.0, "f1": 800 / 9}, abs=1e-3)


@needs_super_glue
def test_wsc_simple_tasks(vocabulary):
  train = _t5_task("super_glue_wsc_v102_simple_train", vocabulary)
  assert train.splits == ("train",)
  first = _examples(train, "train", 1)[0]  # only correct referents: the first is idx 3
  assert first["inputs_pretokenized"].startswith(b"wsc: The pony behaved well, sir, and showed")
  assert (first["targets_pretokenized"], first["idx"]) == (b"young gentleman", 3)
  evaluation = _t5_task("super_glue_wsc_v102_simple_eval", vocabulary)
  examples = _examples(evaluation, "validation", 2)
  assert [ex["targets_pretokenized"] for ex in examples] == [b"anyone", b"Mr. Moncrieff"]
  assert examples[1]["inputs_pretokenized"].endswith(b"requires *his* financial support.")
  # Naming the candidate claims it is the referent: wrong for example 0 (label 0), right for 1.
  pairs = [("", "anyone"), ("", "Mr. Moncrieff")]
  assert _score(evaluation, pairs, examples) == {"accuracy": 50.0}


@needs_glue
@needs_super_glue
def test_mixtures_hold_the_present_tasks():
  glue_mix = seqio.get_mixture_or_task(tasks.GLUE_MIXTURE)
  assert {t.name: glue_mix.get_rate(t) for t in glue_mix.tasks} == {
      "glue_ax_v002": 0.0, "glue_cola_v002": 8551.0, "glue_mrpc_v002": 3668.0,
      "glue_rte_v002": 2490.0, "glue_sst2_v002": 67349.0, "glue_stsb_v002": 5749.0}
  super_mix = seqio.get_mixture_or_task(tasks.SUPER_GLUE_MIXTURE)
  assert {t.name: super_mix.get_rate(t) for t in super_mix.tasks} == {
      "super_glue_axb_v102": 0.0, "super_glue_axg_v102": 0.0, "super_glue_cb_v102": 250.0,
      "super_glue_copa_v102": 400.0, "super_glue_multirc_v102": 27243.0,
      "super_glue_rte_v102": 2490.0, "super_glue_wic_v102": 5428.0,
      "super_glue_wsc_v102_simple_eval": 0.0, "super_glue_wsc_v102_simple_train": 259.0}
  for task in glue_mix.tasks + super_mix.tasks:
    assert isinstance(task.source, benchmark_files.BenchmarkFilesSource), task.name
  assert os.path.samefile(benchmark_tasks.local_directory("glue"), GLUE_DIR)
