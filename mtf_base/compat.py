"""Makes mesh-tensorflow 0.1.21 import on the pinned TensorFlow (2.15).

mesh-tensorflow calls ``tensorflow.python.framework.ops.register_tensor_conversion_function``
at import time (``mesh_tensorflow/ops.py``, for ``ReplicatedVariable``). TensorFlow 2.13 moved
that function to ``tensorflow.python.framework.tensor_conversion_registry`` and dropped the
alias, so ``import mesh_tensorflow`` raises AttributeError (tensorflow/mesh issues 392, 396).
Putting the alias back before the first import is enough: the function's behaviour did not
change, only its home.

Everything in this project that can import mesh_tensorflow first (``mtf_switch``'s ``__init__``,
``tasks``, the command line in ``switch_cli.main``, ``tests/conftest.py``) imports this module
first, so a user never has to remember it. It lives in ``mtf_base``, below every layer, so that
``tasks`` gets the repair without importing the layer package. The patch is idempotent and
touches nothing when TensorFlow still has the alias. It is the one patch that importing
``mtf_switch`` applies; the others are installed by the command line
(``switch_cli.patches``, which lists them all).
"""

from tensorflow.python.framework import ops as _tf_ops

PATCHED_ATTRIBUTE = "register_tensor_conversion_function"


def ensure_mesh_tensorflow_importable() -> bool:
  """Restores ``ops.register_tensor_conversion_function`` if TensorFlow lacks it.

  Returns:
    True if this call added the alias, False if it was already there.
  """
  if hasattr(_tf_ops, PATCHED_ATTRIBUTE):
    return False
  from tensorflow.python.framework import tensor_conversion_registry  # pylint: disable=g-import-not-at-top

  setattr(_tf_ops, PATCHED_ATTRIBUTE,
          tensor_conversion_registry.register_tensor_conversion_function)
  return True


ensure_mesh_tensorflow_importable()
