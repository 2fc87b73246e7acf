"""finetune_vocabulary.path: the fine-tuning tasks re-registered with a model's own vocabulary.

A small SentencePiece model is trained here; binding it must give every task of the GLUE and
SuperGLUE mixtures (and the mixtures themselves, and the SST-2 TSV tasks) that vocabulary,
with the same names, sources, preprocessors, postprocessor and metrics; the SST-2 task's
examples must then be encoded with it. A bad path is an error naming the setting. The
registry is restored afterwards, since the other tests of this process read the same tasks.
"""

import os

import pytest
import sentencepiece as spm
import seqio

import gin
import tasks
from mtf_switch.convert import from_hf
from tasks import finetune_vocabulary, glue

SENTENCES = ["a charming and moving film", "the plot is thin and the acting is flat",
             "one of the best films of the year", "a dull , lifeless movie", "sst2 sentence :"]


@pytest.fixture(scope="module")
def spiece_model(tmp_path_factory):
  directory = tmp_path_factory.mktemp("spiece")
  text = directory / "text.txt"
  text.write_text("\n".join(SENTENCES * 20) + "\n", encoding="utf-8")
  spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(directory / "spiece"),
                                 vocab_size=40, model_type="unigram", character_coverage=1.0,
                                 bos_id=-1, pad_id=0, eos_id=1, unk_id=2)
  return str(directory / "spiece.model")


@pytest.fixture
def restore_registry():
  names = finetune_vocabulary.finetuning_task_names()
  originals = {name: seqio.TaskRegistry.get(name) for name in names}
  yield originals
  for name, task in originals.items():
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add_provider(name, task)
  glue.register_glue_mixtures(replace=True)
  gin.clear_config()


def _vocab_file(task):
  return {f.vocabulary.sentencepiece_model_file for f in task.output_features.values()}


def test_binding_gives_every_finetuning_task_the_model_vocabulary(spiece_model,
                                                                   restore_registry):
  gin.bind_parameter("finetune_vocabulary.path", spiece_model)
  names = tasks.register_finetune_vocabulary_from_gin()
  assert "glue_sst2_v002" in names and "super_glue_boolq_v102" in names
  for name in names:
    task, original = seqio.TaskRegistry.get(name), restore_registry[name]
    assert _vocab_file(task) == {spiece_model}, name
    assert _vocab_file(original) != {spiece_model}, name
    assert task.source is original.source
    assert task.postprocessor is original.postprocessor
    assert [m.__name__ for m in task.metric_fns] == [m.__name__ for m in original.metric_fns]
    assert len(task.preprocessors) == len(original.preprocessors)
  for mixture in (glue.GLUE_MIXTURE, glue.SUPER_GLUE_MIXTURE):
    mixed = seqio.MixtureRegistry.get(mixture).tasks
    assert mixed and all(_vocab_file(t) == {spiece_model} for t in mixed), mixture


def test_sst2_examples_are_encoded_with_the_model_vocabulary(spiece_model, restore_registry):
  if glue.SST2_TASK not in seqio.TaskRegistry.names():
    pytest.skip("../shared/data/glue/SST-2 is absent, so the SST-2 TSV task is not registered")
  finetune_vocabulary.use_vocabulary(spiece_model)
  task = seqio.TaskRegistry.get(glue.SST2_TASK)
  example = next(iter(task.get_dataset({"inputs": 64, "targets": 4}, split="validation",
                                       shuffle=False).take(1)))
  vocabulary = seqio.SentencePieceVocabulary(spiece_model, extra_ids=100)
  decoded = vocabulary.decode(example["inputs"].numpy().tolist())
  assert decoded.startswith("sst2 sentence")
  assert max(example["inputs"].numpy()) < vocabulary.vocab_size


def test_unbound_changes_nothing(restore_registry):
  assert tasks.register_finetune_vocabulary_from_gin() is None
  for name, task in restore_registry.items():
    assert seqio.TaskRegistry.get(name) is task


@pytest.mark.parametrize("path", ["/nonexistent/spiece.model", __file__])
def test_bad_path_is_an_error_naming_the_setting(path, restore_registry):
  gin.bind_parameter("finetune_vocabulary.path", path)
  with pytest.raises((ValueError, OSError), match="finetune_vocabulary.path"):
    tasks.register_finetune_vocabulary_from_gin()
  for name, task in restore_registry.items():
    assert seqio.TaskRegistry.get(name) is task  # nothing replaced


def test_imported_model_gin_binds_its_own_vocabulary(spiece_model, restore_registry):
  gin.parse_config(from_hf.finetune_vocabulary_gin(spiece_model))
  assert finetune_vocabulary.finetune_vocabulary_path() == spiece_model
  assert os.path.isabs(spiece_model)
