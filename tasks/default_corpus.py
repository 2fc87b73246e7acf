"""The default corpus: English prose harvested from installed documentation, no download needed.

``write_default_corpus`` harvests it (see ``tasks.docstring_corpus``) into a text file, one
document per line. The registered tasks ``switch_default_corpus_{span_corruption,prefix_lm,
full_lm}`` read it from a cache directory (``$MTF_SWITCH_CACHE_DIR``, else
``~/.cache/mtf_switch``), where the corpus and its SentencePiece vocabulary are written the first
time a task is used; registering them costs nothing. Cached files are named by a key of the
harvest rules and the Python and package versions, so another environment gets its own files.

Measured on the project's 2-core machine (Python 3.11.7, requirements.txt installed): 13,841
documents, 2,665,964 characters (2.68 MB), from 6,037 files in 39-42 s (``ast`` parsing is nearly
all of it; torch and tensorflow are two thirds); the 8k-piece vocabulary then trains in ~2.5 s.
Both happen once per environment. To measure again:
``python -m tasks.default_corpus --output /tmp/corpus.txt``.
"""

import argparse
import dataclasses
import json
import os
import sys
import threading
from typing import Optional, Sequence

import seqio

from tasks import docstring_corpus, registry, text_files
from tasks import objectives as objectives_lib
from tasks import paths as paths_lib
from tasks import vocab as vocab_lib

TASK_PREFIX = "switch_default_corpus"
# For ~2.7 MB of text (SentencePiece allows at most ~14k pieces on it): 8k pieces keep most
# words whole without starving the rarer pieces.
DEFAULT_VOCAB_SIZE = 8000

_WRITE_LOCK = threading.Lock()


def write_default_corpus(output_path: str,
                         packages: Sequence[tuple[str, str]] = docstring_corpus.DEFAULT_PACKAGES,
                         include_stdlib: bool = True,
                         ) -> docstring_corpus.HarvestStats:
  """Harvests the default corpus and writes it to ``output_path``, one document per line.

  Also writes ``output_path + ".json"``: the sources (with versions) and the measurements.

  Args:
    output_path: the text file to write (its directory is created).
    packages: ``(import name, distribution name)`` pairs of installed packages to harvest.
    include_stdlib: harvest the Python standard library and its pydoc topics too.

  Returns:
    The harvest's HarvestStats (documents, characters, seconds, ...).
  """
  sources = docstring_corpus.default_sources(packages, include_stdlib)
  if not sources:
    raise ValueError(f"None of the packages {[p for p, _ in packages]} is installed and "
                     "include_stdlib is False: there is nothing to harvest")
  documents, stats = docstring_corpus.harvest(sources)
  if not documents:
    raise ValueError(f"No prose found in {[s.root for s in sources]}")
  directory = os.path.dirname(os.path.abspath(output_path))
  os.makedirs(directory, exist_ok=True)
  manifest = {"key": docstring_corpus.sources_key(sources),
              "sources": [dataclasses.asdict(s) for s in sources],
              "stats": dataclasses.asdict(stats)}
  vocab_lib.write_atomically(
      output_path + ".json", (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
  # The corpus goes last: its existence means "written completely".
  vocab_lib.write_atomically(
      output_path, "".join(d + "\n" for d in documents).encode("utf-8"))
  return stats


def default_corpus_path(cache_dir: Optional[str] = None,
                        packages: Sequence[tuple[str, str]] = docstring_corpus.DEFAULT_PACKAGES,
                        include_stdlib: bool = True) -> str:
  """Where the default corpus of this environment is cached (cheap: no harvesting)."""
  sources = docstring_corpus.default_sources(packages, include_stdlib)
  key = docstring_corpus.sources_key(sources)
  return os.path.join(paths_lib.cache_dir(cache_dir), f"default_corpus-{key}.txt")


def ensure_default_corpus(cache_dir: Optional[str] = None,
                          packages: Sequence[tuple[str, str]] = docstring_corpus.DEFAULT_PACKAGES,
                          include_stdlib: bool = True) -> str:
  """Returns the cached default corpus's path, harvesting and writing it first if absent."""
  path = default_corpus_path(cache_dir, packages, include_stdlib)
  with _WRITE_LOCK:
    if not os.path.isfile(path):
      write_default_corpus(path, packages, include_stdlib)
  return path


def default_corpus_vocabulary(cache_dir: Optional[str] = None,
                              vocab_size: int = DEFAULT_VOCAB_SIZE,
                              packages: Sequence[tuple[str, str]] = (
                                  docstring_corpus.DEFAULT_PACKAGES),
                              include_stdlib: bool = True,
                              ) -> vocab_lib.CachedSentencePieceVocabulary:
  """The default corpus's SentencePiece vocabulary, trained and cached on first use."""
  packages = tuple(tuple(p) for p in packages)
  corpus = default_corpus_path(cache_dir, packages, include_stdlib)
  model_path = f"{corpus[:-len('.txt')]}-spm{vocab_size}.model"
  return vocab_lib.CachedSentencePieceVocabulary(
      model_path, [corpus], vocab_size, prepare_fn=ensure_default_corpus,
      prepare_args=(paths_lib.cache_dir(cache_dir), packages, include_stdlib))


def register_default_corpus_tasks(cache_dir: Optional[str] = None,
                                  vocab_size: int = DEFAULT_VOCAB_SIZE,
                                  objectives: Sequence[str] = objectives_lib.OBJECTIVES,
                                  packages: Sequence[tuple[str, str]] = (
                                      docstring_corpus.DEFAULT_PACKAGES),
                                  include_stdlib: bool = True, *, prefix: str = TASK_PREFIX,
                                  replace: bool = True) -> dict[str, seqio.Task]:
  """Registers ``{prefix}_{objective}`` tasks over the default corpus; nothing is built yet.

  Args:
    cache_dir: where the corpus and vocabulary are written on first use (default: see module).
    vocab_size: SentencePiece pieces of the vocabulary trained on the corpus.
    objectives: any of "span_corruption", "prefix_lm", "full_lm".
    packages: ``(import name, distribution name)`` pairs to harvest (see docstring_corpus).
    include_stdlib: harvest the standard library too.
    prefix: task name prefix.
    replace: replace tasks already registered under these names (else keep them).

  Returns:
    The tasks by name. Splits: "train" and "validation" (every 20th document).
  """
  packages = tuple(tuple(p) for p in packages)
  cache = paths_lib.cache_dir(cache_dir)
  vocabulary = default_corpus_vocabulary(cache, vocab_size, packages, include_stdlib)
  corpus = default_corpus_path(cache, packages, include_stdlib)
  tasks = {}
  for objective in objectives:
    source = text_files.TextLinesDataSource(
        [corpus], validate=False, prepare_fn=ensure_default_corpus,
        prepare_args=(cache, packages, include_stdlib))
    name = f"{prefix}_{objective}"
    tasks[name] = registry.add_task(
        name, replace=replace, **text_files.text_task_kwargs(source, vocabulary, objective))
  return tasks


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tasks.default_corpus",
      description="Harvest the default corpus into a text file and print its measurements.")
  parser.add_argument("--output", required=True, help="text file to write, one document a line")
  parser.add_argument("--stdlib_only", action="store_true",
                      help="harvest only the Python standard library")
  args = parser.parse_args(argv)
  packages = () if args.stdlib_only else docstring_corpus.DEFAULT_PACKAGES
  stats = write_default_corpus(args.output, packages)
  print(json.dumps(dataclasses.asdict(stats), indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
