"""Every patch this project applies to its dependencies, and the one function that installs them.

Checked against the versions requirements.txt pins: tensorflow 2.15.1 (tensorflow-estimator
2.15.0), mesh-tensorflow 0.1.21, t5 0.9.4. A new release of any of them means reading each
replaced function again. ``utils`` below is ``mesh_tensorflow.transformer.utils``; each patch
replaces the attribute in that module's namespace (or the one named), so only code that looks
it up there sees the replacement.

Applied on import of ``mtf_base.compat`` (so by ``import mtf_switch``, ``import tasks`` and
the command line): the only patch a library user gets.

  * ``tensorflow.python.framework.ops.register_tensor_conversion_function``: put back, as
    ``tensor_conversion_registry``'s. TensorFlow 2.13 moved it and mesh-tensorflow 0.1.21
    calls it on import, which fails without it (``mtf_base.compat``).

Installed by ``install`` (``switch_cli.main`` calls it once t5's main is imported; for the
life of the process):

  * ``utils.tpu_config``: ``mtf_switch.seeding.SeededTpuConfig``. mesh-tf's ``get_estimator``
    builds a ``RunConfig`` without ``tf_random_seed``; the wrapper adds the gin-bound
    ``mtf_switch.init_seed.seed`` so that one seed gives one initialisation.
  * ``utils.mtf``: ``mtf_switch.summaries``'s stand-in for the ``mesh_tensorflow`` package with
    ``serialize_training_step`` wrapped. Summaries written inside mesh-tf's microbatch while
    loop are lost; the routing statistics leave the loop as its outputs instead.
  * ``utils.parse_gin_defaults_and_flags``: ``switch_cli.gin_parse``. t5's main re-binds the
    dtypes to float32 on CPU after the user's gin; the dtypes asked for are recorded, checked
    and honoured (``switch_cli.dtypes``), and the ``text_files`` task and the task name are
    checked before t5 looks the task up.
  * ``utils.run``, twice: inside, ``switch_cli.cluster`` (the ``switch_run_config`` settings,
    and runs over a cluster of ``switch_cli.worker`` processes, which mesh-tf cannot express);
    outside, ``switch_cli.preflight`` (checkpoint present and of this model, vocabulary loads,
    nothing to train, the training lock, stale temporary files) before TensorFlow starts.
  * ``utils.infer_model``, ``utils.score_from_strings``, ``utils.score_from_dataset``
    (``switch_cli.infer``): ``eval_checkpoint_step = None`` means the latest checkpoint; in
    mesh-tf it means "every checkpoint as it appears", so these modes never ended.
  * ``utils.write_lines_to_file`` (``switch_cli.infer``): lines as UTF-8 text; mesh-tf wrote
    ``str(bytes)``, ``b'...'`` literals.
  * ``mesh_tensorflow.transformer.attention.attention``: ``mtf_switch.attention_layout``'s,
    the same function with q, k and v transposed heads-major so that each of its products is
    a plain batched matmul (mesh-tf's layout made TensorFlow's CPU einsum transpose 5-D
    operands around every one; the Switch LM's step was 1.22x slower). Library users who
    build models in their own process call ``mtf_switch.attention_layout.install()``;
    ``SWITCH_ATTENTION_LAYOUT=mesh_tf`` in the environment keeps mesh-tf's (for benchmarks).

Replaced only while a run is in ``utils.run`` (restored after it):

  * ``utils.get_estimator`` (``switch_cli.preflight``): the estimator's ``train`` and
    ``evaluate`` get a hook that compares the graph's variables with the checkpoint's before
    the session restores it (a clear error instead of TensorFlow's "Key ... not found").
  * ``utils.tpu_config`` again (``switch_cli.run_config.overridden``), when
    ``switch_run_config`` or a cluster adds settings mesh-tf's ``RunConfig`` call lacks.
  * On a cluster run (``switch_cli.cluster``):
    ``tensorflow.python.training.monitored_session._PREEMPTION_ERRORS`` and
    ``tensorflow_estimator.python.estimator.tpu.error_handling._IGNORED_ERRORS`` emptied (a
    dead worker is an error, not a preemption to wait out for ever), and
    ``tensorflow.python.client.session.BaseSession.close`` bounded (closing waits for a dead
    worker without limit), and ``BaseSession._extend_graph`` bounded on a session's first
    call (the session's creation, where the master waits for every worker without limit).

Applied when a model's gin file asks for it (``import mtf_switch.convert.vocab_mask``, which
``python -m mtf_switch.convert from-hf`` writes when it pads the vocabulary), in the command
line and in-process alike:

  * ``mesh_tensorflow.transformer.transformer.Unitransformer._call_internal`` and
    ``._compute_loss``: the logits of the padding ids get -1e9; mesh-tf never masks them.

The experiment commands (switch_experiments/) add their own instrumentation in their own processes (a
hook on ``TPUEstimator.train``, ``utils.run`` replaced by a replay, ``mtf.Operation.__init__``
recording its builder); docs/ARCHITECTURE.md lists them.
"""

import os

from mtf_base import compat
from mtf_switch import attention_layout, seeding, summaries
from switch_cli import cluster, dtypes, gin_parse, infer, preflight

# (module, attribute) that ``install`` replaces for the life of the process, in the order above.
INSTALLED = (
    ("mesh_tensorflow.transformer.utils", "tpu_config"),
    ("mesh_tensorflow.transformer.utils", "mtf"),
    ("mesh_tensorflow.transformer.utils", "parse_gin_defaults_and_flags"),
    ("mesh_tensorflow.transformer.utils", "run"),
    ("mesh_tensorflow.transformer.utils", "infer_model"),
    ("mesh_tensorflow.transformer.utils", "score_from_strings"),
    ("mesh_tensorflow.transformer.utils", "score_from_dataset"),
    ("mesh_tensorflow.transformer.utils", "write_lines_to_file"),
    ("mesh_tensorflow.transformer.attention", "attention"),
)

# mesh-tf's utils module -> the dtype request its installed parse step records.
_installed = {}


def install(mesh_transformer_main) -> dtypes.RequestedDtypes:
  """Installs every patch above into t5's ``mesh_transformer_main`` (its ``utils``), once.

  A second call changes nothing and returns the first call's dtype request.

  Returns:
    The dtype request that the parse step records and ``utils.run`` re-binds before it runs.
  """
  utils = mesh_transformer_main.utils
  if utils in _installed:
    return _installed[utils]
  compat.ensure_mesh_tensorflow_importable()
  seeding.install(utils)
  summaries.install(utils)
  requested = gin_parse.install(
      mesh_transformer_main,
      after_parse=[preflight.register_text_files, preflight.register_finetune_vocabulary,
                   preflight.check_task])
  cluster.install(mesh_transformer_main)  # inside the pre-flight checks: they run first
  preflight.install(mesh_transformer_main, before_run=requested.restore)
  infer.install()  # infer/score: one checkpoint (default the latest), UTF-8 text, then exit
  if attention_layout.use_heads_major(os.environ):
    attention_layout.install()
  _installed[utils] = requested
  return requested
