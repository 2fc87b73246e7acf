"""Tests of the text-file tasks: held-out split, validation errors, vocabularies, objectives,
temperature mixing, and batches through t5's mesh_transformer input pipeline.

Everything runs on small files written to a temporary directory, with a SentencePiece vocabulary
trained there: no download, no shared data.
"""

import os
import pickle
import random
import re

import pytest
import sentencepiece as spm
import seqio
from t5.models import mesh_transformer

import tasks
from tasks import build_vocab, lines, mixing, registry, text_files
from tasks import vocab as vocab_lib

PREFIX = "test_tasks_text_"
VOCAB_SIZE = 300


def _words(seed: int, count: int = 400) -> list[str]:
  rng = random.Random(seed)
  return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
          for _ in range(count)]


def _write_prose(path, num_lines: int, seed: int = 0) -> str:
  """Deterministic pseudo-English: capitalised sentences of 5 to 40 pseudo-words."""
  rng = random.Random(seed)
  words = _words(seed)
  with open(path, "w", encoding="utf-8") as f:
    for _ in range(num_lines):
      f.write(" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))).capitalize() + ".\n")
  return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
  return _write_prose(tmp_path_factory.mktemp("corpus") / "corpus.txt", 400)


@pytest.fixture(scope="module")
def vocab_path(corpus, tmp_path_factory) -> str:
  prefix = str(tmp_path_factory.mktemp("vocab") / "spm")
  return vocab_lib.train_sentencepiece(corpus, prefix, VOCAB_SIZE)


@pytest.fixture(scope="module")
def vocabulary(vocab_path) -> seqio.Vocabulary:
  return seqio.SentencePieceVocabulary(vocab_path, extra_ids=vocab_lib.EXTRA_IDS)


@pytest.fixture(scope="module", autouse=True)
def _unregister_test_tasks():
  yield
  registry.remove(*[n for n in list(seqio.MixtureRegistry.names()) if n.startswith(PREFIX)])
  registry.remove(*[n for n in list(seqio.TaskRegistry.names()) if n.startswith(PREFIX)])


# ---------------------------------------------------------------------------- held-out split


def test_holdout_rule_counts_blank_lines_but_drops_them(tmp_path):
  path = tmp_path / "docs.txt"
  # 100 lines "doc 0" .. "doc 99", except lines 10 and 39 which are blank.
  path.write_text("".join("\n" if i in (10, 39) else f"doc {i}\n" for i in range(100)))
  stats = lines.scan_text_file(path)
  assert (stats.lines, stats.documents) == (100, 98)
  # Validation lines are 19, 39, 59, 79, 99; line 39 is blank.
  assert (stats.train_documents, stats.validation_documents) == (94, 4)
  assert list(lines.iter_documents(path, "validation")) == [
      "doc 19", "doc 59", "doc 79", "doc 99"]
  assert [lines.is_validation_line(n) for n in (0, 18, 19, 20, 39)] == [
      False, False, True, False, True]


def test_tensorflow_reader_matches_python_reader(tmp_path):
  path = tmp_path / "mixed.txt"
  body = "".join(f"  line {i} \r\n" if i % 3 else f"line {i}\n" for i in range(60))
  # A byte-order mark, CRLF endings, a whitespace-only line and non-ASCII text.
  path.write_bytes(("\ufeff" + body + " \t \nÜber straße 终\n").encode("utf-8"))
  source = text_files.TextLinesDataSource([path])
  for split in lines.SPLITS:
    from_tf = [ex["text"].decode("utf-8")
               for ex in source.get_dataset(split, shuffle=False).as_numpy_iterator()]
    assert from_tf == list(lines.iter_documents(path, split))
    assert len(from_tf) == source.num_input_examples(split)
  assert source.num_input_examples("train") == 58  # 61 non-blank of 62 lines, 3 held out
  assert source.num_input_examples("validation") == 3  # lines 19, 39, 59
  assert "line 0" in lines.iter_documents(path, "train")  # the BOM is gone
  copy = pickle.loads(pickle.dumps(source))
  assert copy.num_input_examples("train") == 58 and copy.paths == source.paths


def test_interleaved_files_read_every_document_once_mixed(tmp_path):
  small, large = tmp_path / "small.txt", tmp_path / "large.txt"
  small.write_text("".join(f"s{i}\n" for i in range(100)))
  large.write_text("".join(f"l{i}\n" for i in range(300)))
  concatenated = text_files.TextLinesDataSource([small, large])
  mixed = text_files.TextLinesDataSource([small, large], interleave_seed=7)

  def documents(source):
    return [ex["text"].decode() for ex in source.get_dataset("train").as_numpy_iterator()]

  in_order, interleaved = documents(concatenated), documents(mixed)
  assert in_order[:95] == list(lines.iter_documents(small, "train"))  # one file, then the next
  assert sorted(interleaved) == sorted(in_order)  # a pass: every document exactly once
  # Each file keeps its own order; the first quarter already holds both, about 1:3.
  assert [d for d in interleaved if d[0] == "s"] == in_order[:95]
  first = interleaved[:95]
  assert 10 <= sum(d[0] == "s" for d in first) <= 40
  assert documents(mixed) == interleaved  # the same interleaving every time
  assert documents(text_files.TextLinesDataSource([small, large], interleave_seed=8)) != (
      interleaved)


def test_bad_files_give_errors_naming_them(tmp_path):
  missing = str(tmp_path / "missing.txt")
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    lines.scan_text_file(missing)
  with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path))):
    lines.scan_text_file(tmp_path)
  empty = tmp_path / "empty.txt"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match=re.escape(str(empty)) + ".* is empty"):
    lines.scan_text_file(empty)
  blank = tmp_path / "blank.txt"
  blank.write_bytes(b"\n  \n\t\n")
  with pytest.raises(ValueError, match=re.escape(str(blank)) + ".* is blank"):
    lines.scan_text_file(blank)
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes("fine line\n".encode() + "caf\u00e9 au lait\n".encode("latin-1"))
  with pytest.raises(ValueError, match=re.escape(str(latin1)) +
                     r".* is not valid UTF-8: line 2, byte offset 13"):
    lines.scan_text_file(latin1)


def test_registering_a_bad_file_fails_before_registering(tmp_path, vocabulary):
  latin1 = tmp_path / "bad.txt"
  latin1.write_bytes(b"ok\n\xff\xfe\n")
  with pytest.raises(ValueError, match=re.escape(str(latin1))):
    tasks.register_text_file_task(PREFIX + "bad", [str(latin1)], vocabulary)
  assert PREFIX + "bad" not in seqio.TaskRegistry.names()
  with pytest.raises(ValueError, match="Unknown objective 'mlm'"):
    tasks.register_text_file_task(PREFIX + "bad", latin1, vocabulary, objective="mlm")


# ------------------------------------------------------------------------------ vocabularies


def test_trained_vocabulary_follows_t5_conventions(vocab_path, corpus, tmp_path):
  sp = spm.SentencePieceProcessor(model_file=vocab_path)
  assert sp.get_piece_size() == VOCAB_SIZE
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  with open(vocab_path[:-len(".model")] + ".vocab", encoding="utf-8") as f:
    assert len(f.read().splitlines()) == VOCAB_SIZE
  # Same inputs, same bytes.
  again = vocab_lib.train_sentencepiece(corpus, str(tmp_path / "again"), VOCAB_SIZE)
  with open(vocab_path, "rb") as a, open(again, "rb") as b:
    assert a.read() == b.read()
  seqio_vocab = seqio.SentencePieceVocabulary(vocab_path, extra_ids=100)
  assert seqio_vocab.vocab_size == VOCAB_SIZE + 100


def test_vocabulary_never_sees_held_out_lines(tmp_path):
  path = tmp_path / "held.txt"
  rng = random.Random(1)
  words = _words(1, 200)
  with open(path, "w", encoding="utf-8") as f:
    for i in range(200):
      if lines.is_validation_line(i):  # only held-out lines carry this word
        f.write(" ".join(["quixotically"] * 30) + "\n")
      else:
        f.write(" ".join(rng.choice(words) for _ in range(20)) + "\n")
  held_out = vocab_lib.train_sentencepiece(path, str(tmp_path / "a"), 100)
  everything = vocab_lib.train_sentencepiece(path, str(tmp_path / "b"), 100,
                                             holdout_every=10**9)

  def pieces(model_file):
    sp = spm.SentencePieceProcessor(model_file=model_file)
    return {sp.id_to_piece(i) for i in range(sp.get_piece_size())}

  assert "▁quixotically" not in pieces(held_out)
  assert "▁quixotically" in pieces(everything)


def test_vocabulary_errors_name_the_bad_value(corpus, tmp_path):
  with pytest.raises(ValueError, match=r"vocab_size=100000 .*Vocabulary size too high"):
    vocab_lib.train_sentencepiece(corpus, str(tmp_path / "x"), 100_000)
  with pytest.raises(ValueError, match="vocab_size must be an integer >= 8, got 3"):
    vocab_lib.train_sentencepiece(corpus, str(tmp_path / "x"), 3)
  missing = str(tmp_path / "nope.txt")
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    vocab_lib.train_sentencepiece(missing, str(tmp_path / "x"), 100)
  with pytest.raises(FileNotFoundError, match="SentencePiece model not found"):
    vocab_lib.as_vocabulary(str(tmp_path / "nope.model"))


def test_build_vocab_cli(corpus, tmp_path, capsys):
  prefix = str(tmp_path / "out" / "spm")
  assert build_vocab.main(["--input", corpus, "--output_prefix", prefix,
                           "--vocab_size", "200"]) == 0
  assert spm.SentencePieceProcessor(model_file=prefix + ".model").get_piece_size() == 200
  assert "from 380 training documents of 1 file(s)" in capsys.readouterr().out
  missing = str(tmp_path / "missing.txt")
  assert build_vocab.main(["--input", corpus, missing, "--output_prefix", prefix,
                           "--vocab_size", "200"]) == 1
  assert f"build_vocab: error: Text file not found: {missing!r}" in capsys.readouterr().err


def test_cached_vocabulary_builds_on_first_use_only(corpus, tmp_path):
  cache = tmp_path / "cache"
  first = tasks.cached_vocabulary(corpus, str(cache), VOCAB_SIZE)
  second = tasks.cached_vocabulary(corpus, str(cache), VOCAB_SIZE)
  assert first == second  # compares configuration: no build
  assert not cache.exists() and not first.is_built
  assert first.vocab_size == VOCAB_SIZE + 100
  model_file = first.sentencepiece_model_file
  built_at = os.stat(model_file).st_mtime_ns
  assert second.vocab_size == VOCAB_SIZE + 100  # read from the cache, not retrained
  assert os.stat(model_file).st_mtime_ns == built_at
  assert first.decode(first.encode("Hello there.")) == "Hello there."
  copy = pickle.loads(pickle.dumps(second))  # gin deep-copies vocabularies it is given
  assert copy == second and copy.vocab_size == VOCAB_SIZE + 100


# --------------------------------------------------------------------------- task examples


def test_span_corruption_handles_a_long_document(tmp_path, vocabulary):
  path = _write_prose(tmp_path / "long.txt", 40, seed=3)
  with open(path, "a", encoding="utf-8") as f:
    rng, words = random.Random(4), _words(4)
    f.write(" ".join(rng.choice(words) for _ in range(60_000)) + "\n")  # ~360k characters
  task = tasks.register_text_file_task(PREFIX + "long", path, vocabulary)
  lengths = {"inputs": 64, "targets": 16}
  examples = list(task.get_dataset(lengths, split="train", shuffle=False).as_numpy_iterator())
  # The long line (~176k tokens: beyond select_random_chunk's 65,536) was cut, not dropped.
  assert len(examples) > 500
  sentinels = range(vocabulary.vocab_size - 100, vocabulary.vocab_size)
  for ex in examples:
    assert 0 < len(ex["inputs"]) <= 64 and 0 < len(ex["targets"]) <= 16
    assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS
  assert all(any(t in sentinels for t in ex["inputs"]) for ex in examples[:50])


def test_objectives_have_t5_features(corpus, vocabulary):
  prefix_lm = tasks.register_text_file_task(PREFIX + "prefix", corpus, vocabulary, tasks.PREFIX_LM)
  full_lm = tasks.register_text_file_task(PREFIX + "full", corpus, vocabulary, tasks.FULL_LM)
  assert set(prefix_lm.output_features) == {"inputs", "targets"}
  assert set(full_lm.output_features) == {"targets"}
  ex = next(full_lm.get_dataset({"targets": 32}, split="validation", shuffle=False)
            .as_numpy_iterator())
  assert set(ex) == {"targets"} and len(ex["targets"]) == 32
  ex = next(prefix_lm.get_dataset({"inputs": 32, "targets": 32}, split="train", shuffle=False)
            .as_numpy_iterator())
  assert len(ex["inputs"]) <= 32 and len(ex["targets"]) <= 32


def test_mesh_train_dataset_fn_produces_packed_examples(corpus, vocabulary):
  tasks.register_text_file_task(PREFIX + "mesh", corpus, vocabulary)
  lengths = {"inputs": 64, "targets": 16}
  ds = mesh_transformer.mesh_train_dataset_fn(PREFIX + "mesh", lengths, seed=7)
  batch = next(iter(ds.batch(4)))
  assert set(batch) == {"inputs", "inputs_segmentation", "inputs_position",
                        "targets", "targets_segmentation", "targets_position"}
  assert batch["inputs"].shape == (4, 64) and batch["targets"].shape == (4, 16)
  assert batch["inputs"].dtype.name == "int32"
  # Span corruption fills the inputs length itself, so packing finds rows already full.
  assert (batch["inputs_segmentation"].numpy() >= 1).all()
  assert (batch["targets"].numpy() == 1).any(axis=1).all()  # each row holds an EOS


def test_seqio_feature_converter(corpus, vocabulary):
  tasks.register_text_file_task(PREFIX + "converter", corpus, vocabulary)
  ds = seqio.get_dataset(PREFIX + "converter", {"inputs": 64, "targets": 16},
                         seqio.EncDecFeatureConverter(pack=True), dataset_split="validation")
  ex = next(ds.as_numpy_iterator())
  assert ex["encoder_input_tokens"].shape == (64,) and ex["decoder_target_tokens"].shape == (16,)


# --------------------------------------------------------------------------------- mixtures


def test_temperature_mixing_rates_numbers():
  rates = tasks.temperature_mixing_rates({"big": 1_000_000, "small": 10_000}, alpha=0.3)
  assert rates["big"] == pytest.approx(0.799240, abs=1e-6)
  assert rates["small"] == pytest.approx(0.200760, abs=1e-6)
  assert tasks.temperature_mixing_rates({"a": 30, "b": 10}, alpha=1.0) == pytest.approx(
      {"a": 0.75, "b": 0.25})
  with pytest.raises(ValueError, match="alpha must be in"):
    tasks.temperature_mixing_rates({"a": 1}, alpha=0.0)
  with pytest.raises(ValueError, match="all zero"):
    tasks.temperature_mixing_rates({"a": 0})


def test_text_files_mixture_samples_by_temperature(tmp_path, vocabulary):
  paths = {}
  for name, num_lines in (("big", 2000), ("mid", 200), ("small", 20)):
    paths[PREFIX + name] = (tmp_path / f"{name}.txt")
    paths[PREFIX + name].write_text("".join(f"{name} line {i}\n" for i in range(num_lines)))
  mixture = tasks.register_text_files_mixture(PREFIX + "mix", paths, vocabulary, alpha=0.3)
  counts = {t.name: t.num_input_examples("train") for t in mixture.tasks}
  assert counts == {PREFIX + "big": 1900, PREFIX + "mid": 190, PREFIX + "small": 19}
  rates = mixing.mixture_rates(mixture)
  assert rates[PREFIX + "big"] == pytest.approx(0.570654, abs=1e-6)
  assert rates[PREFIX + "mid"] == pytest.approx(0.286004, abs=1e-6)
  assert rates[PREFIX + "small"] == pytest.approx(0.143342, abs=1e-6)
  ex = next(mixture.get_dataset({"inputs": 32, "targets": 8}, "train", seed=1)
            .as_numpy_iterator())
  assert len(ex["inputs"]) <= 32


def test_registration_is_idempotent(corpus, vocabulary):
  first = tasks.register_text_file_task(PREFIX + "idem", corpus, vocabulary)
  kept = registry.add_task(PREFIX + "idem", replace=False, source=None, output_features={})
  assert kept is first
  before = (set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names()))
  tasks.register_all()
  tasks.register_all()
  assert (set(seqio.TaskRegistry.names()), set(seqio.MixtureRegistry.names())) == before
