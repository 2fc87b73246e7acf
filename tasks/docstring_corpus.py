"""Harvests English prose from the documentation of installed Python code, with no download.

The default corpus of this project is text that every machine with ``requirements.txt`` installed
already has, that the project does not carry: the docstrings of the Python standard library and
of the libraries the project pins, plus the Python language reference topics that the standard
library ships for ``help()`` (``pydoc_data/topics.py``).

The source files are parsed with ``ast``, never imported, so harvesting runs no library code (some
stdlib modules act on import) and does not need TensorFlow or torch to be importable.

Each docstring is cut into paragraphs (at blank lines), and a paragraph is kept as a document if
it reads as prose (``prose_paragraph``): no indented or markup lines (code, argument lists,
doctests, directives), at least 80 characters and 12 words, a capital first letter and a final
``.``, ``!`` or ``?``, at least 80% letters among non-space characters and at most 2% code
characters. Documents are deduplicated, then ordered by their SHA-256 so that the order is
deterministic and independent of the file walk while neighbouring documents still come from
different sources (a sorted order would cluster paragraphs that start alike).
"""

import ast
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import sysconfig
import time
from typing import Iterable, Iterator, Optional, Sequence

# Bump when the harvesting rules change: cached corpora are keyed by it.
HARVEST_VERSION = 1

# Pinned in requirements.txt (import name, distribution name), so the same on every machine.
DEFAULT_PACKAGES = (
    ("seqio", "seqio-nightly"),
    ("t5", "t5"),
    ("mesh_tensorflow", "mesh-tensorflow"),
    ("gin", "gin-config"),
    ("tensorflow_datasets", "tensorflow-datasets"),
    ("_pytest", "pytest"),
    ("setuptools", "setuptools"),
    ("tensorflow", "tensorflow"),
    ("torch", "torch"),
)

# Directories whose docstrings describe tests, not the library.
SKIPPED_DIRS = frozenset({"test", "tests", "testing", "testdata", "idlelib", "lib2to3",
                          "site-packages", "dist-packages", "turtledemo", "__pycache__"})

_MIN_CHARS = 80
_MIN_WORDS = 12
_MIN_LETTER_FRACTION = 0.8
_MAX_CODE_FRACTION = 0.02
_CODE_CHARS = frozenset("{}[]()=<>_*#@$%^&|\\/~+")
_MARKUP_STARTS = (">>>", "...", "..", "$ ", "|", "+-", "- ", "* ", "#", ":", "=", "-", "~")
_ROLE = re.compile(r":[\w:.-]+:`~?([^`]*)`")  # Sphinx roles such as :class:`~foo.Bar`
_FIELD = re.compile(r"^[\w.]+\s?(\([^)]*\))?\s?:\s")  # "name (type): ..." argument lists
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


@dataclasses.dataclass(frozen=True)
class Source:
  """A tree of Python files to harvest; ``version`` keys the cache."""
  name: str
  root: str
  version: str


@dataclasses.dataclass
class HarvestStats:
  """Measurements of one harvest."""
  documents: int = 0
  characters: int = 0
  utf8_bytes: int = 0
  files_parsed: int = 0
  files_failed: int = 0
  paragraphs_seen: int = 0
  seconds: float = 0.0
  documents_per_source: dict = dataclasses.field(default_factory=dict)


def prose_paragraph(paragraph: str) -> Optional[str]:
  """Returns the paragraph as one normalised line if it reads as English prose, else None."""
  lines = paragraph.strip("\n").split("\n")
  for line in lines:
    if line[:1].isspace() or line.lstrip().startswith(_MARKUP_STARTS):
      return None
  text = " ".join(line.strip() for line in lines)
  text = _ROLE.sub(r"\1", text).replace("``", '"').replace("`", "")
  text = " ".join(text.split())
  if len(text) < _MIN_CHARS or "::" in text or ">>>" in text:
    return None
  if not text[0].isupper() or text[-1] not in ".!?" or _FIELD.match(text):
    return None
  if len(_WORD.findall(text)) < _MIN_WORDS:
    return None
  nonspace = sum(1 for c in text if not c.isspace())
  letters = sum(1 for c in text if c.isalpha())
  code = sum(1 for c in text if c in _CODE_CHARS)
  if letters < _MIN_LETTER_FRACTION * nonspace or code > _MAX_CODE_FRACTION * len(text):
    return None
  return text


def python_files(root: str) -> Iterator[str]:
  """The ``.py`` files under ``root`` in sorted order, skipping test directories and files."""
  if os.path.isfile(root):
    yield root
    return
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith("."))
    for name in sorted(files):
      if (name.endswith(".py") and not name.endswith("_test.py")
          and not name.startswith("test_")):
        yield os.path.join(directory, name)


def file_docstrings(path: str) -> list[str]:
  """The docstrings of a Python file's module, classes and functions (raises if unparsable)."""
  with open(path, "rb") as f:
    tree = ast.parse(f.read(), filename=path)
  kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
  return [doc for node in ast.walk(tree) if isinstance(node, kinds)
          for doc in [ast.get_docstring(node, clean=True)] if doc]


def pydoc_topics_texts(stdlib_dir: str) -> list[str]:
  """The language-reference topics that the stdlib ships for ``help()``, read without import."""
  path = os.path.join(stdlib_dir, "pydoc_data", "topics.py")
  if not os.path.isfile(path):
    return []
  with open(path, "rb") as f:
    tree = ast.parse(f.read(), filename=path)
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "topics" for t in node.targets):
      topics = ast.literal_eval(node.value)
      return [topics[key] for key in sorted(topics)]
  return []


def stdlib_source() -> Source:
  return Source("stdlib", sysconfig.get_paths()["stdlib"],
                "python-" + ".".join(map(str, sys.version_info[:3])))


def package_source(import_name: str, distribution: Optional[str] = None) -> Optional[Source]:
  """The installed package's source tree, found without importing it; None if not installed."""
  try:
    spec = importlib.util.find_spec(import_name)
  except (ImportError, ValueError):
    spec = None
  if spec is None:
    return None
  if spec.submodule_search_locations:
    root = sorted(spec.submodule_search_locations)[0]
  elif spec.origin and spec.origin.endswith(".py"):
    root = spec.origin
  else:
    return None
  try:
    version = importlib.metadata.version(distribution or import_name)
  except importlib.metadata.PackageNotFoundError:
    version = "unknown"
  return Source(import_name, root, version)


def default_sources(packages: Sequence[tuple[str, str]] = DEFAULT_PACKAGES,
                    include_stdlib: bool = True) -> list[Source]:
  """The stdlib (if asked) and those ``(import name, distribution)`` packages that are installed."""
  sources = [stdlib_source()] if include_stdlib else []
  for import_name, distribution in packages:
    source = package_source(import_name, distribution)
    if source is not None:
      sources.append(source)
  return sources


def sources_key(sources: Iterable[Source]) -> str:
  """A short hash naming the corpus these sources yield (rules version, names, versions)."""
  parts = [f"v{HARVEST_VERSION}"] + [f"{s.name}={s.version}" for s in sources]
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def harvest(sources: Sequence[Source], include_pydoc_topics: bool = True,
            ) -> tuple[list[str], HarvestStats]:
  """Harvests, filters, deduplicates and orders the documents of ``sources``.

  Args:
    sources: trees of Python files (see ``default_sources``).
    include_pydoc_topics: also harvest ``pydoc_data/topics.py`` of a source named "stdlib".

  Returns:
    The documents (single lines of prose, in SHA-256 order) and the harvest's measurements.
  """
  start = time.perf_counter()
  stats = HarvestStats()
  seen = set()
  for source in sources:
    texts: list[str] = []
    if include_pydoc_topics and source.name == "stdlib":
      texts.extend(pydoc_topics_texts(source.root))
    for path in python_files(source.root):
      try:
        texts.extend(file_docstrings(path))
        stats.files_parsed += 1
      except (SyntaxError, ValueError, RecursionError, OSError, MemoryError):
        stats.files_failed += 1  # e.g. Python 2 files shipped as data; nothing to learn there
    new = 0
    for text in texts:
      for paragraph in _PARAGRAPH_BREAK.split(text):
        stats.paragraphs_seen += 1
        document = prose_paragraph(paragraph)
        if document and document not in seen:
          seen.add(document)
          new += 1
    stats.documents_per_source[source.name] = new
  documents = sorted(seen, key=lambda d: hashlib.sha256(d.encode("utf-8")).hexdigest())
  stats.documents = len(documents)
  stats.characters = sum(len(d) for d in documents)
  stats.utf8_bytes = sum(len(d.encode("utf-8")) + 1 for d in documents)
  stats.seconds = time.perf_counter() - start
  return documents, stats
