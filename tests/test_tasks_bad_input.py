"""Bad input to the tasks, as a hostile but fair user would give it: each case must fail at once
(at registration or construction, before any tf.data pipeline runs) with an error that names the
bad value. The README's table of bad input counts these cases.
"""

import codecs
import random
import re

import pytest
import sentencepiece as spm

import gin
import tasks
from tasks import build_vocab, gin_text_files, registry
from tasks import vocab as vocab_lib

NAME = "test_tasks_bad_input_task"


def _prose(path, lines=60, seed=0):
  rng = random.Random(seed)
  words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 7))) for _ in range(80)]
  path.write_text("".join(" ".join(rng.choice(words) for _ in range(12)) + "\n"
                          for _ in range(lines)), encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """{kind: path} of good and bad files."""
  root = tmp_path_factory.mktemp("bad_input")
  good = _prose(root / "good.txt")
  (root / "empty.txt").write_bytes(b"")
  (root / "blank.txt").write_bytes(b"  \n\t\n\n")
  (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
  (root / "cr_only.txt").write_bytes(b"first document\rsecond document\rthird\r")
  (root / "nul_line.txt").write_bytes(b"a real line\n\x00\x00\x00\nanother line\n")
  (root / "utf16.txt").write_bytes("plain ascii text\nsecond line\n".encode("utf-16-le"))
  (root / "utf16_bom.txt").write_bytes(codecs.BOM_UTF16_LE + "text\n".encode("utf-16-le"))
  (root / "text.model").write_text("this is not a SentencePiece model\n")
  (root / "a_dir").mkdir()
  model = vocab_lib.train_sentencepiece(good, str(root / "spm"), 60)
  return {"good": good, "model": model, "missing": str(root / "missing.txt"),
          **{p.stem: str(p) for p in root.iterdir()}}


@pytest.fixture(autouse=True, scope="module")
def _unregister():
  yield
  registry.remove(NAME, gin_text_files.TASK_NAME)


def _register(files, paths, vocabulary=None, **kwargs):
  return tasks.register_text_file_task(NAME, paths, vocabulary or files["model"], **kwargs)


def _cached(files, **kwargs):
  args = dict(input_paths=files["good"], cache_dir=str(files["a_dir"]), vocab_size=50)
  return tasks.cached_vocabulary(**{**args, **kwargs})


# (case, call, exception type, pattern the message must match). The pattern names the bad
# value (a path, a parameter and its value) and, where it helps, what to do.
CASES = [
    ("text file missing", lambda f: _register(f, f["missing"]), FileNotFoundError,
     r"not found: .*missing\.txt"),
    ("text file is a directory", lambda f: _register(f, f["a_dir"]), IsADirectoryError,
     r"a_dir.* is a directory"),
    ("text file empty", lambda f: _register(f, f["empty"]), ValueError, r"empty\.txt.* is empty"),
    ("text file blank", lambda f: _register(f, f["blank"]), ValueError, r"blank\.txt.* is blank"),
    ("text file Latin-1", lambda f: _register(f, f["latin1"]), ValueError,
     r"latin1\.txt.* not valid UTF-8: line 1, byte offset 3"),
    ("CR-only line endings", lambda f: _register(f, f["cr_only"]), ValueError,
     r"cr_only\.txt.*line 1, has a carriage return .*CR-only"),
    ("a line of NUL bytes", lambda f: _register(f, f["nul_line"]), ValueError,
     r"nul_line\.txt.*line 2, contains a NUL byte"),
    ("UTF-16 without BOM", lambda f: _register(f, f["utf16"]), ValueError,
     r"utf16\.txt.*NUL byte.*UTF-16"),
    ("UTF-16 with BOM", lambda f: _register(f, f["utf16_bom"]), ValueError,
     r"utf16_bom\.txt.* not valid UTF-8"),
    ("no paths", lambda f: _register(f, []), ValueError, r"at least one text file"),
    ("paths None", lambda f: _register(f, None), TypeError, r"path or a list of paths, got None"),
    ("a path that is a number", lambda f: _register(f, [f["good"], 3]), TypeError,
     r"non-empty strings, got 3"),
    ("an empty path string", lambda f: _register(f, ""), TypeError, r"non-empty strings, got ''"),
    ("vocabulary not a SentencePiece model", lambda f: _register(f, f["good"], f["text"]),
     ValueError, r"text\.model.* is not a SentencePiece model file"),
    ("vocabulary missing", lambda f: _register(f, f["good"], f["missing"] + ".model"),
     FileNotFoundError, r"SentencePiece model not found: .*missing\.txt\.model"),
    ("vocabulary a directory", lambda f: _register(f, f["good"], f["a_dir"]), IsADirectoryError,
     r"a_dir.* is a directory"),
    ("vocabulary a number", lambda f: _register(f, f["good"], 8000), TypeError,
     r"vocabulary must be .*got 8000"),
    ("unknown objective", lambda f: _register(f, f["good"], objective="mlm"), ValueError,
     r"Unknown objective 'mlm'"),
    ("holdout_every 1", lambda f: _register(f, f["good"], holdout_every=1), ValueError,
     r"holdout_every must be an integer >= 2, got 1"),
    ("holdout_every True", lambda f: _register(f, f["good"], holdout_every=True), ValueError,
     r"holdout_every must be an integer >= 2, got True"),
    ("cached vocab_size 0", lambda f: _cached(f, vocab_size=0), ValueError,
     r"vocab_size must be an integer >= 8, got 0"),
    ("cached vocab_size a string", lambda f: _cached(f, vocab_size="8000"), ValueError,
     r"vocab_size must be an integer >= 8, got '8000'"),
    ("cached model_type unknown", lambda f: _cached(f, model_type="bytes"), ValueError,
     r"model_type must be one of .*got 'bytes'"),
    ("cached character_coverage 0", lambda f: _cached(f, character_coverage=0), ValueError,
     r"character_coverage must be a number in \(0, 1\], got 0"),
    ("cached extra_ids -1", lambda f: _cached(f, extra_ids=-1), ValueError,
     r"extra_ids must be an integer >= 0, got -1"),
    ("cached cache_dir None", lambda f: _cached(f, cache_dir=None), ValueError,
     r"cache_dir must be a directory path, got None"),
    ("cached text file missing", lambda f: _cached(f, input_paths=f["missing"]),
     FileNotFoundError, r"not found: .*missing\.txt"),
    ("vocab_size larger than the text supports",
     lambda f: vocab_lib.train_sentencepiece(f["good"], f["a_dir"] + "/x", 100_000), ValueError,
     r"vocab_size=100000 .*Vocabulary size too high"),
    ("mixture of no tasks", lambda f: tasks.register_text_files_mixture("m", {}, f["model"]),
     ValueError, r"'m' needs at least one task"),
    ("mixture alpha 0",
     lambda f: tasks.register_text_files_mixture("m", {NAME: f["good"]}, f["model"], alpha=0),
     ValueError, r"alpha must be in \(0, 1\], got 0"),
    ("task name with a space", lambda f: tasks.register_text_file_task(
        "my task", f["good"], f["model"]), ValueError, r"my task.*invalid characters"),
]


@pytest.mark.parametrize("case, call, error, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_at_once_naming_it(files, case, call, error, pattern):
  with pytest.raises(error, match=pattern):
    call(files)


def test_a_good_file_still_registers(files):
  """The checks above reject the bad, not the ordinary: CRLF endings, a BOM, trailing spaces."""
  path = files["a_dir"] + "/crlf.txt"
  with open(path, "wb") as f:
    f.write(codecs.BOM_UTF8 + b"".join(b"line %d of text  \r\n" % i for i in range(30)))
  task = _register(files, path)
  assert task.source.num_input_examples("train") == 29


def test_build_vocab_reports_the_pieces_the_model_has(files, tmp_path, capsys):
  """A char model has one piece per distinct character whatever --vocab_size asks for."""
  prefix = str(tmp_path / "char")
  assert build_vocab.main(["--input", files["good"], "--output_prefix", prefix,
                           "--model_type", "char", "--vocab_size", "40"]) == 0
  true_count = spm.SentencePieceProcessor(model_file=prefix + ".model").get_piece_size()
  assert true_count != 40  # the case the report used to get wrong
  out, err = capsys.readouterr()
  assert f"({true_count} pieces)" in out and "(40 pieces)" not in out
  assert f"--vocab_size 40 asked for 40 pieces; the char model has {true_count}" in err


def _bind_text_files(**bindings):
  gin.clear_config()
  for key, value in bindings.items():
    gin.bind_parameter(f"text_files.{key}", value)


def test_gin_text_files_task_registers_from_bindings(files, tmp_path):
  try:
    _bind_text_files(paths=[files["good"]], vocab_size=40, cache_dir=str(tmp_path))
    task = tasks.register_text_files_from_gin()
    assert task.name == gin_text_files.TASK_NAME
    assert task.source.paths == (files["good"],)
    assert not task.output_features["targets"].vocabulary.is_built  # built on first use
    _bind_text_files(paths=files["good"], vocabulary=files["model"], objective="full_lm")
    task = tasks.register_text_files_from_gin()
    assert list(task.output_features) == ["targets"]
    gin.clear_config()
    assert tasks.register_text_files_from_gin() is None  # nothing bound, nothing registered
  finally:
    gin.clear_config()


@pytest.mark.parametrize("bindings, pattern", [
    ({"paths": ["MISSING"]}, r"text_files(\.paths)?: Text file not found: .*missing\.txt"),
    ({"objective": "mlm"}, r"text_files: Unknown objective 'mlm'"),
    ({"vocab_size": 0}, r"text_files: vocab_size must be an integer >= 8, got 0"),
    ({"vocabulary": "TEXT"}, r"text_files: .*text\.model.* is not a SentencePiece model"),
    ({"paths": ["CR_ONLY"]}, r"text_files.paths: .*cr_only\.txt.*carriage return"),
], ids=["missing file", "objective", "vocab_size 0", "vocabulary not a model", "CR-only file"])
def test_gin_text_files_errors_name_the_binding(files, tmp_path, bindings, pattern):
  values = {"paths": [files["good"]], "cache_dir": str(tmp_path), **bindings}
  values = {k: ([files["missing"] if p == "MISSING" else files["cr_only"] if p == "CR_ONLY"
                 else p for p in v] if k == "paths" else files["text"] if v == "TEXT" else v)
            for k, v in values.items()}
  try:
    _bind_text_files(**values)
    with pytest.raises((ValueError, OSError), match=pattern):
      tasks.register_text_files_from_gin()
  finally:
    gin.clear_config()


def test_case_count():
  """The README's count of bad task inputs tried comes from this file."""
  assert len(CASES) == 31
  assert len({c[0] for c in CASES}) == len(CASES)
  assert all(re.compile(c[3]) for c in CASES)
