"""Plain-Python reading of "one document per line" text files: validation and the held-out split.

The held-out rule, used everywhere in this package (tasks, vocabulary training, counts):

  * Lines are numbered from 0 within each file, counting every line, blank or not.
  * Line ``n`` belongs to the ``validation`` split when ``n % holdout_every == holdout_every - 1``
    (with the default ``holdout_every=20``: lines 19, 39, 59, ..., i.e. every 20th line),
    and to ``train`` otherwise.
  * A line is a document after stripping ASCII whitespace (and a leading byte-order mark). Blank
    lines count in the numbering (it is the editor's, ``nl -ba``'s, minus one) and are dropped
    after the split is decided.

So a file of N non-blank lines has ``N // 20`` validation documents and ``N - N // 20`` training
documents. The same rule is applied by the TensorFlow reader in ``tasks.text_files``; both split
lines on b"\\n" only and strip the same whitespace (space, \\t, \\n, \\v, \\f, \\r).
"""

import codecs
import dataclasses
import os
from typing import Iterator, Sequence, Union

HOLDOUT_EVERY = 20
TRAIN = "train"
VALIDATION = "validation"
SPLITS = (TRAIN, VALIDATION)

PathLike = Union[str, os.PathLike]


@dataclasses.dataclass(frozen=True)
class TextFileStats:
  """What one pass over a text file found."""
  path: str
  lines: int  # every line, blank or not
  documents: int  # non-blank lines
  train_documents: int
  validation_documents: int
  characters: int  # in the non-blank lines, after stripping

  def documents_in(self, split: str) -> int:
    return {TRAIN: self.train_documents, VALIDATION: self.validation_documents}[split]


def is_validation_line(line_number: int, holdout_every: int = HOLDOUT_EVERY) -> bool:
  """Whether 0-based line ``line_number`` of a file is held out for validation."""
  return line_number % holdout_every == holdout_every - 1


def _strip(raw: bytes) -> bytes:
  """Drops a leading byte-order mark, then ASCII whitespace (what tf.strings.strip drops)."""
  if raw.startswith(codecs.BOM_UTF8):
    raw = raw[len(codecs.BOM_UTF8):]
  return raw.strip()


def check_holdout_every(holdout_every: int) -> None:
  if isinstance(holdout_every, bool) or not isinstance(holdout_every, int) or holdout_every < 2:
    raise ValueError(f"holdout_every must be an integer >= 2, got {holdout_every!r}")


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS}")


def _open_checked(path: PathLike):
  """Opens ``path`` for binary reading, or raises an error that names it."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Text file not found: {path!r}")
  if os.path.isdir(path):
    raise IsADirectoryError(f"Expected a text file but {path!r} is a directory")
  return open(path, "rb")


def _check_line_bytes(path: PathLike, line_number: int, raw: bytes) -> None:
  """Rejects what both readers would turn silently into wrong documents.

  * A carriage return inside a line: both readers split on b"\\n" only, so a file with CR-only
    (classic Mac) line endings would become one document. CRLF endings are fine.
  * A NUL byte: no text has one; a line of NULs would become a document of unknown tokens,
    and a UTF-16 file (which is valid UTF-8 when its text is ASCII) is full of them.
  """
  body = raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n")
  where = f"Text file {os.fspath(path)!r}, line {line_number + 1}"
  if b"\x00" in body:
    raise ValueError(f"{where}, contains a NUL byte: expected UTF-8 text, one document per line "
                     "(a UTF-16 or binary file? convert with `iconv -f UTF-16 -t UTF-8`)")
  if b"\r" in body:
    raise ValueError(
        f"{where}, has a carriage return (\\r) inside the line: lines end with \\n only "
        "(CRLF is accepted), so CR-only line endings would read as one document. "
        "Convert them with `tr '\\r' '\\n'`.")


def scan_text_file(path: PathLike, holdout_every: int = HOLDOUT_EVERY) -> TextFileStats:
  """Validates a UTF-8, one-document-per-line file and counts its documents per split.

  Args:
    path: the file.
    holdout_every: every ``holdout_every``-th line goes to validation (see module docstring).

  Returns:
    The file's TextFileStats.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    IsADirectoryError: ``path`` is a directory.
    ValueError: the file is empty or blank, is not valid UTF-8 (the message names the path,
      the 1-based line and the byte offset of the first bad byte), has a NUL byte or a
      carriage return inside a line (CR-only line endings).
  """
  check_holdout_every(holdout_every)
  lines = documents = validation = characters = 0
  offset = 0
  with _open_checked(path) as f:
    for line_number, raw in enumerate(f):
      try:
        raw.decode("utf-8")  # only to validate: the line's own bytes locate an error
      except UnicodeDecodeError as e:
        raise ValueError(
            f"Text file {os.fspath(path)!r} is not valid UTF-8: line {line_number + 1}, "
            f"byte offset {offset + e.start} ({e.reason}). Convert it to UTF-8, e.g. with "
            "`iconv -f LATIN1 -t UTF-8`.") from None
      _check_line_bytes(path, line_number, raw)
      offset += len(raw)
      lines += 1
      stripped = _strip(raw)
      if not stripped:
        continue
      documents += 1
      characters += len(stripped.decode("utf-8"))
      if is_validation_line(line_number, holdout_every):
        validation += 1
  if documents == 0:
    what = "empty" if offset == 0 else "blank (it has no non-blank line)"
    raise ValueError(
        f"Text file {os.fspath(path)!r} is {what}: expected UTF-8 text, one document per line")
  return TextFileStats(path=os.fspath(path), lines=lines, documents=documents,
                       train_documents=documents - validation,
                       validation_documents=validation, characters=characters)


def iter_documents(path: PathLike, split: str, holdout_every: int = HOLDOUT_EVERY,
                   ) -> Iterator[str]:
  """Yields the stripped non-blank documents of one split of a (validated) text file."""
  check_split(split)
  check_holdout_every(holdout_every)
  want_validation = split == VALIDATION
  with _open_checked(path) as f:
    for line_number, raw in enumerate(f):
      if is_validation_line(line_number, holdout_every) != want_validation:
        continue
      stripped = _strip(raw)
      if stripped:
        yield stripped.decode("utf-8")


def scan_text_files(paths: Sequence[PathLike], holdout_every: int = HOLDOUT_EVERY,
                    ) -> list[TextFileStats]:
  """``scan_text_file`` over several files; also rejects an empty list of paths."""
  paths = normalize_paths(paths)
  return [scan_text_file(p, holdout_every) for p in paths]


def normalize_paths(paths) -> tuple[str, ...]:
  """Turns one path or a sequence of paths into a non-empty tuple of absolute path strings."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  if isinstance(paths, (bytes, dict)) or not hasattr(paths, "__iter__"):
    raise TypeError(f"Expected a text file path or a list of paths, got {paths!r}")
  paths = list(paths)
  bad = [p for p in paths if not isinstance(p, (str, os.PathLike)) or not os.fspath(p)]
  if bad:
    raise TypeError(f"Text file paths must be non-empty strings, got {bad[0]!r} in {paths!r}")
  paths = tuple(os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths)
  if not paths:
    raise ValueError("Expected at least one text file path, got none")
  return paths
