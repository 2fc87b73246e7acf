"""A gin-bound seed for model initialisation under ``t5_mesh_transformer``.

mesh-tensorflow's ``utils.run`` builds its ``RunConfig`` without ``tf_random_seed``, so the
Estimator never sets a graph seed and every training run draws a fresh initialisation, even
with the same data seed. The paper's Table 3 compares initialisation scales over several
seeds, so the seed has to reach the graph. Bind it in gin:

    --gin_param="mtf_switch.init_seed.seed = 3"

With a seed bound, the Estimator sets it as the graph seed before calling the model function.
The TensorFlow ops that Mesh-TF creates when it lowers the graph, which include the variable
initialisers, then draw deterministic seeds of their own, so two runs of the same
configuration start from identical weights. Unbound (the default), nothing changes.

What it does not fix: the noise of Mesh-TF's own random ops (dropout, the router's input
jitter) on a placement mesh. ``PlacementMeshImpl.random`` gives each such op an explicit seed,
``hash(f"{random.random()},{slice}")``, from Python's unseeded random module and per-process
string hashing, so two runs with one seed draw different noise after the same first weights
(and, inside Mesh-TF's microbatch loop, one stateful op serves every microbatch).

How: ``install()`` wraps the ``tpu_config`` module that ``mesh_tensorflow.transformer.utils``
holds, and its ``RunConfig`` adds ``tf_random_seed`` when a seed is bound. The wrapper lives in
that module's namespace only; TensorFlow's own ``tpu_config`` is untouched. The command line
installs it (``switch_cli.patches``, with the project's other patches); importing
``mtf_switch`` does not.
"""

from typing import Optional

import gin

_MAX_SEED = 2**63 - 1


@gin.configurable("init_seed", module="mtf_switch")
def init_seed(seed=None):
  """The bound initialisation seed, checked; None when unbound.

  Raises:
    ValueError: if the seed is not an integer in [0, 2**63 - 1].
  """
  if seed is None:
    return None
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
    raise ValueError(f"mtf_switch.init_seed.seed must be an integer in [0, 2**63 - 1], "
                     f"got {seed!r}")
  return seed


class SeededTpuConfig:
  """Stands in for the ``tpu_config`` module inside mesh-tensorflow's ``utils``.

  Every attribute is the module's own, except ``RunConfig``: that adds
  ``tf_random_seed=init_seed()`` unless the caller passed one or no seed is bound.
  """

  def __init__(self, module):
    self.wrapped = module

  def __getattr__(self, name):
    return getattr(self.wrapped, name)

  def RunConfig(self, *args, **kwargs):  # noqa: N802  (the name mesh-tf calls)
    seed = init_seed()
    if seed is not None:
      kwargs.setdefault("tf_random_seed", seed)
    return self.wrapped.RunConfig(*args, **kwargs)


def install(utils_module: Optional[object] = None) -> bool:
  """Wraps ``mesh_tensorflow.transformer.utils.tpu_config`` (or ``utils_module``'s) once.

  Returns:
    True if this call installed the wrapper, False if it was already installed.
  """
  if utils_module is None:
    from mesh_tensorflow.transformer import utils as utils_module
  if isinstance(utils_module.tpu_config, SeededTpuConfig):
    return False
  utils_module.tpu_config = SeededTpuConfig(utils_module.tpu_config)
  return True
