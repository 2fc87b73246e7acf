"""Tests of the default corpus: the prose filter, the harvester, and the lazily built task.

The full default harvest (stdlib + pinned libraries, ~40 s) is not run here; the harvester is
tested on a package written to a temporary directory, on one small installed package (gin), and
the registered-task path on that small package alone.
"""

import hashlib
import json
import os
import textwrap

import pytest
import seqio

import tasks
from tasks import default_corpus, docstring_corpus, registry

PREFIX = "test_tasks_corpus_"
GIN = (("gin", "gin-config"),)

PROSE = ("The quick brown fox jumps over the lazy dog, and then it runs back into the forest "
         "where nobody can find it again.")


@pytest.fixture(scope="module", autouse=True)
def _unregister_test_tasks():
  yield
  registry.remove(*[n for n in list(seqio.TaskRegistry.names()) if n.startswith(PREFIX)])


@pytest.mark.parametrize("paragraph, kept", [
    (PROSE, PROSE),
    # Lines are joined and Sphinx roles / literals lose their markup.
    ("The :class:`~foo.Bar` object keeps ``state`` between calls, so a caller\n"
     "may resume the work later without having to repeat any of it.",
     'The foo.Bar object keeps "state" between calls, so a caller may resume the work later '
     "without having to repeat any of it."),
    ("too short to be a document.", None),
    (PROSE[:-1], None),  # no final full stop
    ("the quick" + PROSE[9:], None),  # no capital letter
    (">>> print('hello world, this is a doctest and certainly not prose at all.')", None),
    ("Args:\n  x: the first argument, which is rather long and described at length here.", None),
    ("name (str): the name of the thing being described in a rather long field list entry.",
     None),
    ("Computes x = a[i] * b[j] + c{k} for all (i, j) <= n and returns f(x) ** 2 / g(y).", None),
])
def test_prose_filter(paragraph, kept):
  assert docstring_corpus.prose_paragraph(paragraph) == kept


def _write_package(root):
  pkg = root / "pkg"
  (pkg / "tests").mkdir(parents=True)
  second = ("A second paragraph also counts as a document when it is long enough and it reads "
            "like an ordinary English sentence.")
  (pkg / "__init__.py").write_text(
      f'"""{PROSE}\n\n{second}\n\nArgs:\n  x: not prose.\n"""\n')
  (pkg / "mod.py").write_text(textwrap.dedent(f'''\
      def f():
        """{PROSE}"""

      class C:
        """Classes are harvested as well, because their docstrings often describe the idea
        behind a whole group of functions rather than one call."""
      '''))
  (pkg / "tests" / "t.py").write_text(f'"""Tests are skipped. {PROSE}"""\n')
  (pkg / "mod_test.py").write_text(f'"""Test files are skipped. {PROSE}"""\n')
  (pkg / "py2.py").write_text('print "Python 2 files are counted as failures"\n')
  return pkg, second


def test_harvest_of_a_package(tmp_path):
  pkg, second = _write_package(tmp_path)
  source = docstring_corpus.Source("pkg", str(pkg), "1.0")
  documents, stats = docstring_corpus.harvest([source])
  third = ("Classes are harvested as well, because their docstrings often describe the idea "
           "behind a whole group of functions rather than one call.")
  expected = sorted({PROSE, second, third}, key=lambda d: hashlib.sha256(d.encode()).hexdigest())
  assert documents == expected  # deduplicated (PROSE appears twice), in SHA-256 order
  assert (stats.files_parsed, stats.files_failed) == (2, 1)
  assert stats.documents == 3 and stats.documents_per_source == {"pkg": 3}
  assert stats.characters == sum(len(d) for d in expected)


def test_harvest_of_an_installed_package_is_deterministic():
  sources = docstring_corpus.default_sources(GIN, include_stdlib=False)
  assert [s.name for s in sources] == ["gin"] and sources[0].version == "0.5.0"
  first, stats = docstring_corpus.harvest(sources)
  second, _ = docstring_corpus.harvest(sources)
  assert first == second
  assert stats.documents >= 20 and stats.files_failed == 0
  assert all("\n" not in d and len(d) >= 80 and d[-1] in ".!?" for d in first)


def test_stdlib_sources_include_pydoc_topics():
  stdlib = docstring_corpus.stdlib_source()
  topics = docstring_corpus.pydoc_topics_texts(stdlib.root)
  assert len(topics) > 50  # the language reference topics of help()
  assert docstring_corpus.package_source("no_such_package_here") is None
  assert (docstring_corpus.sources_key([stdlib]) !=
          docstring_corpus.sources_key([stdlib, docstring_corpus.package_source("gin")]))


def test_default_corpus_task_is_built_on_first_use(tmp_path):
  cache = tmp_path / "cache"
  registered = tasks.register_default_corpus_tasks(
      str(cache), vocab_size=200, objectives=(tasks.SPAN_CORRUPTION, tasks.FULL_LM),
      packages=GIN, include_stdlib=False, prefix=PREFIX + "dc")
  assert sorted(registered) == [PREFIX + "dc_full_lm", PREFIX + "dc_span_corruption"]
  assert not cache.exists()  # registering built nothing

  task = registered[PREFIX + "dc_span_corruption"]
  ex = next(task.get_dataset({"inputs": 64, "targets": 16}, split="train", shuffle=False)
            .as_numpy_iterator())
  assert len(ex["inputs"]) <= 64 and len(ex["targets"]) <= 16

  corpus = default_corpus.default_corpus_path(str(cache), GIN, include_stdlib=False)
  model = task.output_features["targets"].vocabulary.sentencepiece_model_file
  assert os.path.isfile(corpus) and os.path.isfile(model)
  assert os.path.dirname(model) == str(cache)
  with open(corpus + ".json", encoding="utf-8") as f:
    manifest = json.load(f)
  with open(corpus, encoding="utf-8") as f:
    documents = f.read().splitlines()
  assert manifest["stats"]["documents"] == len(documents)
  assert manifest["sources"][0]["name"] == "gin"
  assert (task.num_input_examples("train") + task.num_input_examples("validation")
          == len(documents))
  assert task.num_input_examples("validation") == len(documents) // 20
  # Both tasks share one vocabulary, so they can be mixed.
  full_lm = registered[PREFIX + "dc_full_lm"]
  assert full_lm.output_features["targets"].vocabulary == task.output_features["targets"].vocabulary


def test_write_default_corpus(tmp_path):
  out = tmp_path / "corpus.txt"
  stats = tasks.write_default_corpus(str(out), GIN, include_stdlib=False)
  text = out.read_text(encoding="utf-8")
  assert text.count("\n") == stats.documents and len(text.encode()) == stats.utf8_bytes
  with pytest.raises(ValueError, match="nothing to harvest"):
    tasks.write_default_corpus(str(out), (("no_such_package_here", "x"),), include_stdlib=False)
