"""Idempotent wrappers around seqio's TaskRegistry and MixtureRegistry.

seqio raises on a duplicate name, and a seqio.Mixture keeps the Task objects it was built with.
So the import-time registrations use ``replace=False`` (a second import, or a reload, is a
no-op), while the explicit ``register_*`` functions replace: a caller who registers a name again
with other files or another vocabulary gets what they asked for, and those functions re-register
their mixtures after their tasks so no mixture keeps a stale task.
"""

import dataclasses
import threading
from typing import Mapping, Optional

import seqio


class PicklableLockMixin:
  """Gives a data source a ``self._lock`` that survives pickling.

  Locks do not pickle (seqio's and Beam's caching pickle tasks); a copy gets its own lock.
  """

  def _init_lock(self) -> None:
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_lock()


def add_task(name: str, *, replace: bool = True, **task_kwargs) -> seqio.Task:
  """Registers a seqio Task, replacing or keeping an existing one of the same name.

  Args:
    name: the task name.
    replace: if True, an existing task of this name is removed first; if False, the existing
      task is returned unchanged.
    **task_kwargs: keyword arguments of ``seqio.TaskRegistry.add`` (source, output_features,
      preprocessors, postprocess_fn, metric_fns, ...).

  Returns:
    The registered task.
  """
  if name in seqio.TaskRegistry.names():
    if not replace:
      return seqio.TaskRegistry.get(name)
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, **task_kwargs)


def add_mixture(name: str, tasks, *, default_rate=None, replace: bool = True) -> seqio.Mixture:
  """Registers a seqio Mixture; see ``add_task`` for the meaning of ``replace``."""
  if name in seqio.MixtureRegistry.names():
    if not replace:
      return seqio.MixtureRegistry.get(name)
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, tasks, default_rate=default_rate)


def remove(*names: str) -> None:
  """Removes tasks or mixtures by name, ignoring names that are not registered."""
  for name in names:
    seqio.MixtureRegistry.remove(name)
    seqio.TaskRegistry.remove(name)


def rebuilt_task(task: seqio.Task, *, source: Optional[seqio.DataSource] = None,
                 vocabulary: Optional[seqio.Vocabulary] = None) -> seqio.Task:
  """The same task (name, preprocessing, postprocessing, metrics) with its source or every
  feature's vocabulary replaced; not registered."""
  features: Mapping[str, seqio.Feature] = task.output_features
  if vocabulary is not None:
    features = {name: dataclasses.replace(feature, vocabulary=vocabulary)
                for name, feature in features.items()}
  # seqio keeps the constructor's preprocessor and metric arguments and builds its own objects
  # from them; passing those arguments again gives a task that behaves the same.
  return seqio.Task(
      task.name, source=task.source if source is None else source, output_features=features,
      preprocessors=task._preprocessor_constructor_args,  # pylint: disable=protected-access
      postprocess_fn=task.postprocessor,
      metric_fns=task._metric_fn_constructor_args,  # pylint: disable=protected-access
      metric_objs=task._metric_objs_constructor_args,  # pylint: disable=protected-access
      shuffle_buffer_size=task.shuffle_buffer_size, source_info=task.source_info)


def replace_registered(task: seqio.Task) -> seqio.Task:
  """Registers ``task`` in place of the task of the same name."""
  seqio.TaskRegistry.remove(task.name)
  seqio.TaskRegistry.add_provider(task.name, task)
  return task
