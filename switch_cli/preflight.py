"""Checks before TensorFlow builds or starts anything, so a bad run fails at once, saying why.

``install`` wraps mesh-tf's ``utils.run`` (t5's main calls it after the gin is final) so that,
before it:

  * a mode that reads a checkpoint (evaluation, inference, scoring, export) on a ``model_dir``
    without one fails naming the directory; t5 would wait for one forever;
  * training to ``utils.run.train_steps`` when the directory already holds that step or a later
    one says plainly that nothing will be trained, and exits 0 without building anything;
  * the vocabulary is loaded (a file that is not a SentencePiece model fails here, naming it);
  * a training run holds an exclusive lock on ``model_dir`` (a second trainer is refused) and
    removes the temporary files that a killed checkpoint write left (``stale_temporary_files``
    says why they are provably stale);

and once the graph is built but before the session restores anything, the model's variables
(names and shapes) are compared with the checkpoint's: a directory holding another model
fails naming what differs and the command that trained it, instead of TensorFlow's
"Key ... not found in checkpoint" after the session has started.
"""

import difflib
import errno
import fcntl
import os
import re
import time
from typing import Callable, Optional

import tensorflow.compat.v1 as tf
from absl import logging

import gin
from switch_cli import PreflightError

# utils.run modes that restore a checkpoint from model_dir (all but "train").
CHECKPOINT_MODES = ("perplexity_eval", "eval", "score_eval", "infer", "score_from_strings",
                    "score_from_dataset", "export", "export_score", "export_infer")
LOCK_FILE = ".switch_mesh_transformer.lock"
_CHECKPOINT_INDEX = re.compile(r"model\.ckpt-(\d+)\.index")
# What a checkpoint write leaves when it is killed: TensorFlow's atomic writes go to
# "{final name}.tmp{random hex}" (the .meta graph, the "checkpoint" state file) and the
# variables to a "model.ckpt-N_temp/" (or "_temp_{uuid}/") directory, renamed when complete.
_TEMPORARY = re.compile(r"(model\.ckpt-\d+.*\.tmp[0-9a-f]+|checkpoint\.tmp[0-9a-f]+|"
                        r"model\.ckpt-\d+_temp(_[0-9a-f]+)?)")


def bound(name: str, default=None):
  """The gin binding ``name`` (e.g. "utils.run.mode"), or ``default`` when unbound."""
  try:
    return gin.query_parameter(name)
  except ValueError:
    return default


def resolved(value):
  """A gin value with macro references (``%MIXTURE_NAME``) followed to what they name."""
  while isinstance(value, gin.config.ConfigurableReference) and value.selector == "gin.macro":
    value = gin.query_parameter("%" + value.scoped_selector.rsplit("/", 1)[0])
  return value


def register_text_files() -> None:
  """Registers the gin-configured ``text_files`` task; a bad setting is a PreflightError."""
  import tasks

  try:
    tasks.register_text_files_from_gin()
  except (ValueError, TypeError, OSError) as e:
    raise PreflightError(str(e)) from None


def register_finetune_vocabulary() -> None:
  """Re-registers the fine-tuning tasks with ``finetune_vocabulary.path`` when it is bound."""
  import tasks

  try:
    tasks.register_finetune_vocabulary_from_gin()
  except (ValueError, TypeError, OSError) as e:
    raise PreflightError(str(e)) from None


def check_task() -> None:
  """The run's task or mixture (``MIXTURE_NAME``) is registered, and ``text_files`` is used
  when its files are bound (else they would be ignored without a word)."""
  import seqio

  from tasks import gin_text_files

  name = resolved(bound("mesh_transformer.get_vocabulary.mixture_or_task_name"))
  if not isinstance(name, str):
    return
  known = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  if name not in known:
    close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.6)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise PreflightError(
        f'MIXTURE_NAME = "{name}" is not a registered seqio task or mixture.{hint} The '
        "project's start with switch_ (see tasks/__init__.py); for your own text files bind "
        f'text_files.paths and MIXTURE_NAME = "{gin_text_files.TASK_NAME}".')
  paths = bound("text_files.paths")
  if paths is not None and name != gin_text_files.TASK_NAME:
    in_mixture = name in seqio.MixtureRegistry.names() and gin_text_files.TASK_NAME in [
        t.name for t in seqio.get_mixture_or_task(name).tasks]
    if not in_mixture:
      raise PreflightError(
          f'text_files.paths = {paths!r} is bound but MIXTURE_NAME = "{name}", so the files '
          f'would not be used: add --gin_param=\'MIXTURE_NAME = "{gin_text_files.TASK_NAME}"\'.')


def checkpoint_steps(model_dir: str) -> list[int]:
  """Steps of the complete checkpoints in model_dir (those with an .index file), ascending."""
  if not tf.io.gfile.isdir(model_dir):
    return []
  return sorted(int(m.group(1)) for f in tf.io.gfile.listdir(model_dir)
                if (m := _CHECKPOINT_INDEX.fullmatch(f)))


def first_command(model_dir: str) -> Optional[str]:
  """The command line that first used model_dir (t5 writes each one to commands/)."""
  path = os.path.join(model_dir, "commands", "command")
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return f.read().strip()


def check_checkpoint_present(model_dir: str, mode: str) -> None:
  if mode in CHECKPOINT_MODES and not checkpoint_steps(model_dir):
    raise PreflightError(
        f'utils.run.mode = "{mode}" reads a checkpoint, but --model_dir={model_dir} has none '
        "(no model.ckpt-N.index file). Train first, or point --model_dir at a trained model.")


def nothing_to_train(model_dir: str, mode: str, train_steps) -> Optional[str]:
  """The plain message when training would do nothing (the saved step >= train_steps)."""
  steps = checkpoint_steps(model_dir)
  if mode != "train" or not steps or not isinstance(train_steps, int):
    return None
  if steps[-1] < train_steps:
    return None
  return (f"Nothing was trained: --model_dir={model_dir} already holds step {steps[-1]}, and "
          f"utils.run.train_steps = {train_steps} is the step to train to (not a number of "
          f"further steps). To train on, set utils.run.train_steps above {steps[-1]}.")


def check_vocabulary(vocabulary) -> None:
  """Loads each local SentencePiece vocabulary once; an unreadable one fails naming its file."""
  vocabularies = vocabulary if isinstance(vocabulary, tuple) else (vocabulary,)
  for vocab in vocabularies:
    path = getattr(vocab, "sentencepiece_model_file", None)
    if path is None or "://" in path:
      continue  # not a SentencePiece file, or remote: nothing is fetched here
    try:
      vocab.vocab_size  # noqa: B018  (loads, or builds a cached vocabulary)
    except Exception as e:  # sentencepiece and protobuf raise several kinds
      raise PreflightError(
          f"The task's vocabulary {path!r} could not be loaded as a SentencePiece model: "
          f"{type(e).__name__}: {e}") from None


def stale_temporary_files(model_dir: str, started: float) -> list[str]:
  """Temporary checkpoint files in model_dir that no live writer can still finish.

  Provably stale, given that the caller holds the directory's training lock: every trainer
  started by this command holds that lock while it writes checkpoints, and the lock dies with
  its process (even on SIGKILL), so no other trainer of ours is alive; and a file last
  modified before this process started was not written by it. Such a file can only be the
  remains of a write that was killed (TensorFlow renames a temporary file into place when it
  is complete, so a finished write leaves none).
  """
  stale = []
  for name in tf.io.gfile.listdir(model_dir):
    name = name.rstrip("/")
    path = os.path.join(model_dir, name)
    if _TEMPORARY.fullmatch(name) and os.path.getmtime(path) < started:
      stale.append(path)
  return sorted(stale)


def remove_stale_temporary_files(model_dir: str, started: float) -> list[str]:
  removed = stale_temporary_files(model_dir, started)
  for path in removed:
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    else:
      tf.io.gfile.remove(path)
  if removed:
    logging.warning("Removed %d temporary file(s) left by a killed checkpoint write in %s "
                    "(older than this run, and no other trainer holds the directory): %s",
                    len(removed), model_dir, ", ".join(os.path.basename(p) for p in removed))
  return removed


def lock_for_training(model_dir: str):
  """An exclusive lock on model_dir for this process's life; a second trainer is refused."""
  tf.io.gfile.makedirs(model_dir)
  handle = open(os.path.join(model_dir, LOCK_FILE), "a+")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise
    handle.seek(0)
    holder = handle.read().strip() or "unknown"
    handle.close()
    raise PreflightError(
        f"Another switch_mesh_transformer (pid {holder}) is training in --model_dir={model_dir}; "
        "two trainers would overwrite each other's checkpoints. Wait for it, or use another "
        "directory.") from None
  handle.seek(0)
  handle.truncate()
  handle.write(str(os.getpid()))
  handle.flush()
  return handle  # keep a reference: closing it releases the lock


def describe_mismatch(model_dir: str, checkpoint: str, graph: dict, saved: dict,
                      limit: int = 5) -> Optional[str]:
  """What differs between the model's variables and a checkpoint's; None when it restores.

  Args:
    graph: {variable name: shape} of the model being built.
    saved: {variable name: shape} of the checkpoint (tf.train.list_variables).
  """
  # Optimizer slots follow their variables, so the variables themselves are shown first.
  missing = sorted((n for n in graph if n not in saved), key=lambda n: (_is_optimizer_slot(n), n))
  reshaped = sorted(n for n in graph if n in saved and list(graph[n]) != list(saved[n]))
  if not missing and not reshaped:
    return None
  extra = sorted(n for n in saved if n not in graph and not _is_optimizer_slot(n))

  def some(names, show=lambda n: n):
    shown = ", ".join(show(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")

  parts = [f"--model_dir={model_dir} holds a checkpoint of a different model "
           f"({os.path.basename(checkpoint)}):"]
  if missing:
    parts.append(f"{len(missing)} of this model's {len(graph)} variables are not in it "
                 f"({some(missing)});")
  if reshaped:
    parts.append(f"{len(reshaped)} have other shapes "
                 f"({some(reshaped, lambda n: f'{n}: model {graph[n]} vs saved {saved[n]}')});")
  if extra:
    parts.append(f"it holds {len(extra)} variables this model lacks ({some(extra)}).")
  command = first_command(model_dir)
  if command:
    parts.append(f"The directory was created by: {command}")
  parts.append("Use a new --model_dir, or the gin files of the model it holds.")
  return " ".join(parts)


def _is_optimizer_slot(name: str) -> bool:
  return bool(re.search(r"_slot_\w+$", name))


class CheckpointMatchesModelHook(tf.estimator.SessionRunHook):
  """Compares the graph's variables with the checkpoint the session will restore.

  ``begin`` runs once the model function has built the graph and before any session exists.
  """

  def __init__(self, model_dir: str, checkpoint: Optional[str] = None):
    self._model_dir = model_dir
    self._checkpoint = checkpoint

  def begin(self):
    checkpoint = self._checkpoint or tf.train.latest_checkpoint(self._model_dir)
    if not checkpoint:
      return
    graph = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
    saved = dict(tf.train.list_variables(checkpoint))
    message = describe_mismatch(self._model_dir, checkpoint, graph, saved)
    if message:
      raise PreflightError(message)


def _with_checkpoint_check(estimator, model_dir: str):
  """Adds CheckpointMatchesModelHook to the estimator's train and evaluate calls."""
  train, evaluate = estimator.train, estimator.evaluate

  def checked_train(*args, hooks=None, **kwargs):
    return train(*args, hooks=[*(hooks or []), CheckpointMatchesModelHook(model_dir)], **kwargs)

  def checked_evaluate(*args, hooks=None, checkpoint_path=None, **kwargs):
    hook = CheckpointMatchesModelHook(model_dir, checkpoint_path)
    return evaluate(*args, hooks=[*(hooks or []), hook], checkpoint_path=checkpoint_path,
                    **kwargs)

  estimator.train, estimator.evaluate = checked_train, checked_evaluate
  return estimator


def install(mesh_transformer_main, before_run: Callable[[], None] = lambda: None) -> None:
  """Wraps mesh-tf's ``utils.run`` (and its estimator factory) with the checks above."""
  utils = mesh_transformer_main.utils
  run, get_estimator = utils.run, utils.get_estimator
  started = time.time()

  def checked_get_estimator(*args, **kwargs):
    return _with_checkpoint_check(get_estimator(*args, **kwargs), kwargs["model_dir"])

  def checked_run(*args, model_dir, **kwargs):
    before_run()
    mode = bound("utils.run.mode", "train")
    check_checkpoint_present(model_dir, mode)
    lock = None
    if mode == "train":
      lock = lock_for_training(model_dir)
      remove_stale_temporary_files(model_dir, started)
    try:
      message = nothing_to_train(model_dir, mode, bound("utils.run.train_steps"))
      if message:
        logging.warning("%s", message)
        print(message, flush=True)
        return None
      vocabulary = bound("utils.run.vocabulary")
      if vocabulary is not None:
        check_vocabulary(vocabulary)
      utils.get_estimator = checked_get_estimator
      return run(*args, model_dir=model_dir, **kwargs)
    finally:
      utils.get_estimator = get_estimator
      if lock is not None:
        lock.close()

  utils.run = checked_run
