"""The compat repair moved to ``mtf_base.compat``; importing this module applies it too."""

from mtf_base.compat import PATCHED_ATTRIBUTE, ensure_mesh_tensorflow_importable  # noqa: F401
