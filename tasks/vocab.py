"""SentencePiece vocabularies: T5's and mT5's (referenced, never loaded here) and local ones.

Local vocabularies follow T5's conventions so that seqio and t5's preprocessors treat them like
T5's own: a unigram model with pad=0, eos=1, unk=2 and no BOS, plus ``EXTRA_IDS`` sentinel ids
that seqio appends at the top of the id range (span corruption's ``<extra_id_N>``).

``train_sentencepiece`` trains one from "one document per line" files, on the training split
only (see ``tasks.lines``), so the held-out lines stay unseen by the tokenizer as well.
``CachedSentencePieceVocabulary`` is a seqio vocabulary whose model file is trained the first time
something asks for it, which lets tasks be registered at import time without any training.
"""

import hashlib
import io
import os
import threading
from typing import Callable, Iterator, Optional, Sequence

import sentencepiece as spm
import seqio
import tensorflow as tf

from tasks import lines as lines_lib

# T5's English vocabulary (the one t5.data.get_default_vocabulary() uses) and mT5's.
T5_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
MT5_VOCAB_PATH = "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model"
EXTRA_IDS = 100

# SentencePiece skips training sentences longer than max_sentence_length bytes, so long
# documents are cut into pieces of at most this many characters (4 UTF-8 bytes each at most).
MAX_PIECE_CHARS = 2000
_MAX_SENTENCE_BYTES = 4 * MAX_PIECE_CHARS + 16
# Above this many training pieces SentencePiece samples (deterministically, seeded) instead.
DEFAULT_MAX_SENTENCES = 2_000_000

_BUILD_LOCK = threading.Lock()


def t5_vocabulary() -> seqio.Vocabulary:
  """T5's default vocabulary (32k pieces + 100 sentinels); lazy: nothing is fetched here."""
  from mtf_base import compat  # noqa: F401  (t5 imports mesh_tensorflow)

  # isort: split
  import t5.data

  return t5.data.get_default_vocabulary()


def mt5_vocabulary() -> seqio.Vocabulary:
  """mT5's vocabulary (250k pieces, sentinels included in the model, hence extra_ids=0)."""
  return seqio.SentencePieceVocabulary(MT5_VOCAB_PATH, extra_ids=0)


def _pieces(document: str, max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
  """Cuts a document into pieces of at most ``max_chars`` characters, at spaces when it can."""
  while len(document) > max_chars:
    cut = document.rfind(" ", max_chars // 2, max_chars)
    if cut <= 0:
      cut = max_chars
    yield document[:cut]
    document = document[cut:].lstrip()
  if document:
    yield document


def training_sentences(paths: Sequence[str], holdout_every: int = lines_lib.HOLDOUT_EVERY,
                       ) -> Iterator[str]:
  """The training-split documents of ``paths``, cut into SentencePiece-sized pieces."""
  for path in paths:
    for document in lines_lib.iter_documents(path, lines_lib.TRAIN, holdout_every):
      yield from _pieces(document)


def write_atomically(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` so that readers never see a partial file."""
  tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(data)
  tf.io.gfile.rename(tmp, path, overwrite=True)


MODEL_TYPES = ("unigram", "bpe", "char", "word")


def check_training_options(vocab_size, model_type: str = "unigram",
                           character_coverage: float = 1.0) -> None:
  """Raises a ValueError naming the first bad SentencePiece training option."""
  if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 8:
    raise ValueError(f"vocab_size must be an integer >= 8, got {vocab_size!r}")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
  if (isinstance(character_coverage, bool) or not isinstance(character_coverage, (int, float))
      or not 0.0 < character_coverage <= 1.0):
    raise ValueError(f"character_coverage must be a number in (0, 1], got {character_coverage!r}")


def check_sentencepiece_model(path: str) -> int:
  """Loads a local SentencePiece model file; returns its piece count, or a ValueError naming it.

  seqio reads the file only inside tf.data, where a bad one fails as a protobuf DecodeError
  that names nothing.
  """
  if os.path.isdir(path):
    raise IsADirectoryError(f"Expected a SentencePiece .model file but {path!r} is a directory")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"SentencePiece model not found: {path!r}")
  try:
    return spm.SentencePieceProcessor(model_file=path).get_piece_size()
  except (RuntimeError, OSError) as e:
    raise ValueError(f"{path!r} is not a SentencePiece model file ({e}); train one with "
                     "`python -m tasks.build_vocab`") from None


def piece_count(model_path: str) -> int:
  """The number of pieces (pad, eos and unk included) of a SentencePiece model file."""
  with tf.io.gfile.GFile(model_path, "rb") as f:
    return spm.SentencePieceProcessor(model_proto=f.read()).get_piece_size()


def train_sentencepiece(input_paths, output_prefix: str, vocab_size: int, *,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        holdout_every: int = lines_lib.HOLDOUT_EVERY,
                        max_sentences: int = DEFAULT_MAX_SENTENCES, seed: int = 0) -> str:
  """Trains a T5-style SentencePiece model on the training split of text files.

  Args:
    input_paths: one path or a sequence of paths of UTF-8 files, one document per line. They are
      validated first (missing, empty or non-UTF-8 files raise an error naming the file).
    output_prefix: writes ``{output_prefix}.model`` and ``{output_prefix}.vocab`` (one
      ``piece<TAB>score`` per line). Parent directories are created.
    vocab_size: number of pieces, including pad, eos and unk (sentinels come on top). A "char"
      model has one piece per distinct character (plus pad, eos, unk) whatever this asks for:
      ``piece_count`` reads the true number from the written model.
    model_type: a SentencePiece model type: "unigram" (T5's), "bpe", "char" or "word".
    character_coverage: fraction of characters the pieces must cover; 1.0 suits small alphabets,
      0.9995 is SentencePiece's advice for languages with large ones (Chinese, Japanese).
    holdout_every: the held-out rule of ``tasks.lines``; those lines are not trained on.
    max_sentences: above this many pieces of text, SentencePiece trains on a seeded sample.
    seed: SentencePiece's random seed (used only when sampling).

  Returns:
    The path of the ``.model`` file.

  Raises:
    ValueError: bad arguments, or SentencePiece could not train with them (e.g. a vocab_size
      larger than the text supports); the message names the value.
  """
  paths = lines_lib.normalize_paths(input_paths)
  check_training_options(vocab_size, model_type, character_coverage)
  lines_lib.scan_text_files(paths, holdout_every)
  model = io.BytesIO()
  spm.set_random_generator_seed(seed)
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=training_sentences(paths, holdout_every), model_writer=model,
        vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        max_sentence_length=_MAX_SENTENCE_BYTES, input_sentence_size=max_sentences,
        shuffle_input_sentence=True, num_threads=os.cpu_count() or 1, minloglevel=2)
  except RuntimeError as e:
    raise ValueError(
        f"SentencePiece could not train a vocabulary of vocab_size={vocab_size} "
        f"(model_type={model_type!r}) on {list(paths)}: {e}") from None
  parent = os.path.dirname(output_prefix)
  if parent:
    tf.io.gfile.makedirs(parent)
  processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
  vocab_lines = "".join(f"{processor.id_to_piece(i)}\t{processor.get_score(i)}\n"
                        for i in range(processor.get_piece_size()))
  write_atomically(f"{output_prefix}.vocab", vocab_lines.encode("utf-8"))
  # The .model file goes last: CachedSentencePieceVocabulary treats it as "build finished".
  write_atomically(f"{output_prefix}.model", model.getvalue())
  return f"{output_prefix}.model"


class CachedSentencePieceVocabulary(seqio.SentencePieceVocabulary):
  """A SentencePieceVocabulary whose model file is trained the first time it is needed.

  Construction is free: nothing is read or trained until the model is first used (vocab_size,
  encode, decode, ...). Then, if ``model_path`` does not exist, ``prepare_fn(*prepare_args)``
  runs (if given; e.g. to write the corpus file the vocabulary is trained on) and
  ``train_sentencepiece`` writes the model. Later uses, in this or any process, read the file.

  Equality (which seqio Mixtures check across tasks) compares the configuration only, so it never
  triggers a build either.
  """

  def __init__(self, model_path: str, train_inputs: Sequence[str], vocab_size: int, *,
               extra_ids: int = EXTRA_IDS, model_type: str = "unigram",
               character_coverage: float = 1.0,
               holdout_every: int = lines_lib.HOLDOUT_EVERY,
               prepare_fn: Optional[Callable[..., object]] = None, prepare_args: tuple = ()):
    if not model_path.endswith(".model"):
      raise ValueError(f"model_path must end in '.model', got {model_path!r}")
    super().__init__(model_path, extra_ids=extra_ids)
    self._train_inputs = tuple(os.fspath(p) for p in train_inputs)
    self._train_vocab_size = vocab_size
    self._model_type = model_type
    self._character_coverage = character_coverage
    self._holdout_every = holdout_every
    self._prepare_fn = prepare_fn
    self._prepare_args = tuple(prepare_args)

  @property
  def is_built(self) -> bool:
    return tf.io.gfile.exists(self.sentencepiece_model_file)

  def ensure_built(self) -> str:
    """Trains and writes the model file unless it exists; returns its path."""
    with _BUILD_LOCK:
      if not self.is_built:
        if self._prepare_fn is not None:
          self._prepare_fn(*self._prepare_args)
        train_sentencepiece(
            self._train_inputs, self.sentencepiece_model_file[:-len(".model")],
            self._train_vocab_size, model_type=self._model_type,
            character_coverage=self._character_coverage, holdout_every=self._holdout_every)
    return self.sentencepiece_model_file

  def _model_context(self):
    # Every use of the model in seqio.SentencePieceVocabulary goes through this method.
    if self._model is None:
      self.ensure_built()
    return super()._model_context()


def files_fingerprint(paths: Sequence[str], *extra) -> str:
  """A short hash of the files' paths, sizes and modification times, plus ``extra`` values.

  Cached vocabularies are named by it, so editing an input file means a new vocabulary rather
  than a stale one.
  """
  digest = hashlib.sha256()
  for path in paths:
    stat = os.stat(path)
    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
  digest.update(repr(extra).encode())
  return digest.hexdigest()[:12]


def cached_vocabulary(input_paths, cache_dir: str, vocab_size: int, *,
                      model_type: str = "unigram", character_coverage: float = 1.0,
                      holdout_every: int = lines_lib.HOLDOUT_EVERY, extra_ids: int = EXTRA_IDS,
                      name: Optional[str] = None) -> CachedSentencePieceVocabulary:
  """A vocabulary trained on ``input_paths`` on first use and cached in ``cache_dir``.

  The files must exist now (their sizes and times name the cache file); they are read only when
  the vocabulary is first used, unless the cached model already exists.

  Args:
    input_paths: one path or a sequence of paths of UTF-8 files, one document per line.
    cache_dir: directory for ``spm_{name}_{vocab_size}_{fingerprint}.model``.
    vocab_size: number of SentencePiece pieces.
    model_type: see ``train_sentencepiece``.
    character_coverage: see ``train_sentencepiece``.
    holdout_every: see ``tasks.lines``.
    extra_ids: sentinel ids added on top of the pieces (span corruption needs them).
    name: a readable part of the file name; defaults to the first file's stem.

  Returns:
    A CachedSentencePieceVocabulary.
  """
  paths = lines_lib.normalize_paths(input_paths)
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"Text file not found: {path!r}")
  # Checked now, not at first use: a bad option would otherwise surface inside tf.data.
  check_training_options(vocab_size, model_type, character_coverage)
  lines_lib.check_holdout_every(holdout_every)
  if isinstance(extra_ids, bool) or not isinstance(extra_ids, int) or extra_ids < 0:
    raise ValueError(f"extra_ids must be an integer >= 0, got {extra_ids!r}")
  if not isinstance(cache_dir, (str, os.PathLike)) or not os.fspath(cache_dir):
    raise ValueError(f"cache_dir must be a directory path, got {cache_dir!r}")
  cache_dir = os.fspath(cache_dir)
  name = name or os.path.splitext(os.path.basename(paths[0]))[0]
  key = files_fingerprint(paths, vocab_size, model_type, character_coverage, holdout_every)
  model_path = os.path.join(cache_dir, f"spm_{name}_{vocab_size}_{key}.model")
  return CachedSentencePieceVocabulary(
      model_path, paths, vocab_size, extra_ids=extra_ids, model_type=model_type,
      character_coverage=character_coverage, holdout_every=holdout_every)


def as_vocabulary(vocabulary) -> seqio.Vocabulary:
  """Accepts a seqio Vocabulary, or a path to a SentencePiece ``.model`` (given EXTRA_IDS).

  A local path is loaded now, so a file that is not a SentencePiece model fails here, naming it.
  """
  if isinstance(vocabulary, seqio.Vocabulary):
    return vocabulary
  if isinstance(vocabulary, (str, os.PathLike)):
    path = os.fspath(vocabulary)
    if "://" not in path:
      path = os.path.abspath(os.path.expanduser(path))
      check_sentencepiece_model(path)
    return seqio.SentencePieceVocabulary(path, extra_ids=EXTRA_IDS)
  raise TypeError(
      f"vocabulary must be a seqio.Vocabulary or a path to a .model file, got {vocabulary!r}")
