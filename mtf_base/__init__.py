"""What every layer of the project may import, and which imports nothing of the project.

  compat.py  makes mesh-tensorflow 0.1.21 import on the pinned TensorFlow (2.15); importing it
             applies the repair, so import it before anything that imports mesh_tensorflow
  paths.py   where the repository's gin/ directory is (``gin_dir``)

It sits below the library (``mtf_switch``), the tasks and the application so that each can
import it without running another layer: ``tasks`` needs the repair before t5, and must not
import the layer package for it. This ``__init__`` imports nothing, so ``import mtf_base.paths``
does not import TensorFlow.
"""
