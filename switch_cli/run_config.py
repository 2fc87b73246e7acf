"""Estimator settings that mesh-tf's ``get_estimator`` does not expose, bindable in gin.

mesh-tf builds its ``RunConfig`` itself, from a fixed set of arguments: the Estimator then
writes training summaries (the loss among them) and logs the loss every 100 steps, whatever the
run. Bind, for a loss curve with every step:

    switch_run_config.save_summary_steps = 1
    switch_run_config.log_step_count_steps = 1

and, for a one-process run whose mesh is laid over virtual CPU devices
(``utils.run.mesh_devices = ["cpu:0", "cpu:1", ...]``):

    switch_run_config.cpu_devices = 4

Without it the Estimator's session has one CPU device and, soft placement being on, runs every
``cpu:k`` of the mesh on ``cpu:0``: the mesh's slices are computed, and their all-to-alls and
all-reduces exchanged, inside one device (the results are the same; the placement is not).

``OverriddenTpuConfig`` stands in for the ``tpu_config`` module inside mesh-tf's ``utils``
while a run builds its estimator, and adds these (and a cluster run's session settings,
``switch_cli.cluster``) to the ``RunConfig`` mesh-tf asks for. Unbound, nothing is added.
"""

import contextlib
from typing import Optional

import gin
from switch_cli import PreflightError


@gin.configurable("switch_run_config")
def bound_settings(save_summary_steps: Optional[int] = None,
                   log_step_count_steps: Optional[int] = None,
                   cpu_devices: Optional[int] = None) -> dict:
  """{RunConfig argument: value} for the bound settings, checked (``cpu_devices`` becomes a
  ``session_config``)."""
  settings = {}
  for name, value in (("save_summary_steps", save_summary_steps),
                      ("log_step_count_steps", log_step_count_steps),
                      ("cpu_devices", cpu_devices)):
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise PreflightError(f"switch_run_config.{name} = {value!r} must be a positive integer.")
    settings[name] = value
  if "cpu_devices" in settings:
    settings["session_config"] = session_config(cpu_devices=settings.pop("cpu_devices"))
  return settings


def session_config(cpu_devices: Optional[int] = None, **options):
  """The Estimator's default session ConfigProto (soft placement, one pass of the graph
  optimizer), with ``cpu_devices`` virtual CPU devices and other ConfigProto ``options``."""
  import tensorflow.compat.v1 as tf
  from tensorflow.core.protobuf import rewriter_config_pb2

  if cpu_devices is not None:
    options["device_count"] = {"CPU": cpu_devices}
  return tf.ConfigProto(
      allow_soft_placement=True,
      graph_options=tf.GraphOptions(rewrite_options=rewriter_config_pb2.RewriterConfig(
          meta_optimizer_iterations=rewriter_config_pb2.RewriterConfig.ONE)),
      **options)


class OverriddenTpuConfig:
  """The ``tpu_config`` module mesh-tf's ``utils`` holds, with ``RunConfig`` given ``extra``."""

  def __init__(self, module, extra: dict):
    self.wrapped, self.extra = module, dict(extra)

  def __getattr__(self, name):
    return getattr(self.wrapped, name)

  def RunConfig(self, *args, **kwargs):  # noqa: N802  (the name mesh-tf calls)
    kwargs.update(self.extra)
    return self.wrapped.RunConfig(*args, **kwargs)


@contextlib.contextmanager
def overridden(utils, extra: dict):
  """Within the block, mesh-tf's ``utils`` builds its RunConfig with ``extra`` added."""
  if not extra:
    yield
    return
  held = utils.tpu_config
  utils.tpu_config = OverriddenTpuConfig(held, extra)
  try:
    yield
  finally:
    utils.tpu_config = held
