"""Switch Transformer layers for Mesh TensorFlow (Fedus, Zoph, Shazeer 2021, arXiv 2101.03961).

Importing this package (or any of its modules, which imports the package first) repairs
mesh-tensorflow's import on the pinned TensorFlow (``mtf_base.compat``), then registers the
project's gin-configurable layers and the ``mtf_switch.init_seed`` binding. That repair is the
only change it makes to a dependency: the wrappers of mesh-tf's training loop that pass the
seed on (``mtf_switch.seeding``) and carry the routing statistics out of the microbatch loop
(``mtf_switch.summaries``) are installed by the command line, ``switch_cli.patches``, which
lists every patch; call their ``install()`` to have them in-process.
"""

from mtf_base import compat  # noqa: F401  (must run before mesh_tensorflow is imported)

# isort: split
from mtf_switch import attention, embedding, layers, routing, seeding, summaries  # noqa: F401  (gin configurables)
from mtf_switch.attention import SwitchAttention  # noqa: F401
from mtf_switch.embedding import GatherVocabEmbedding  # noqa: F401
from mtf_switch.layers import MoEFFN, SwitchFFN  # noqa: F401
from mtf_switch.routing import MoERouter, SwitchRouter  # noqa: F401
