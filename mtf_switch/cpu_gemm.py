"""The expert FFN tuned for oneDNN's AVX2 sgemm: where it runs an expert's product at half
speed, and what the packed FFN does about it.

TensorFlow 2.15 with its oneDNN kernels on (``TF_ENABLE_ONEDNN_OPTS=1``, as the command line
runs) multiplies 2-D float32 matrices with oneDNN's sgemm. For a product with few rows that
sgemm skips packing its operands ("no-copy" kernels) when 1/rows + 1/columns >= 0.0038, and
reads the weight matrix with its own row stride. On a CPU without AVX-512 (oneDNN's AVX2
heuristics; its AVX-512 ones treat a leading dimension that is a multiple of 256 elements as
"bad" and pack instead) a row stride of a multiple of 256 float32 maps the rows onto the same
cache sets, and the product runs at half speed: measured on the project's 2-core AMD EPYC
(AVX2, oneDNN 3.2.1; a one-off scan, one thread), [256, 512] x [512, 2048] at 45 GFLOP/s
against 94 for a [512, 2000] or [512, 2064] weight, 88 with 512 rows (packed); [256, 2048] x
[2048, 512] at 62. ``tools/bench_expert_matmuls.py`` shows the same per product, both threads.

An expert's weight is exactly such a matrix (d_model x d_ff, powers of two), and at 32 or 128
experts an expert gets 256 or 64 rows per step. The packed expert FFN
(``packed_experts._expert_forward``) therefore multiplies by a copy of the weights padded by
``PAD_COLUMNS`` zero columns and drops those columns from the product: one copy of every
weight per step (8 ms for 32 experts of 2 x 4 MiB) for products that run twice as fast.
``forward_padding`` decides per product, at graph-build time.

The same sgemm runs a . b^T (b an expert's [n, k] weight, given as is with transpose_b) at
82 GFLOP/s per thread for 256 rows, as fast as the (b . a^T)^T form that
``packed_experts._transposed_product`` otherwise uses for large weights, without its
transpose: on such a machine the input gradients take the direct form
(``direct_transposed_products``), and with its products tuned the packed FFN pays for smaller
experts (``packed_experts.packing_pays``). docs/performance.md has the measurements.
"""

import contextlib
import functools
from typing import Optional

from tensorflow.python.util import _pywrap_util_port

# oneDNN 3.2 (src/cpu/x64/gemm/gemm_driver.cpp, nocopy_checker_avx2): no-copy kernels when
# 1/m + 1/n >= this.
NOCOPY_THRESHOLD = 0.0038
# oneDNN's own "bad" leading dimension (nocopy_checker_avx512's BAD_LD_MULT), in elements.
BAD_ROW_STRIDE_MULTIPLE = 256
# 16 float32: one 64-byte cache line, so the padded stride is no longer a multiple of 256.
PAD_COLUMNS = 16

# A test's or benchmark's answer to onednn_avx2_sgemm, over the machine's
# (``assume_onednn_avx2_sgemm``).
_assumed: Optional[bool] = None


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset:
  """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def machine_runs_onednn_avx2_sgemm() -> bool:
  """Whether this process's float32 matmuls go to oneDNN's sgemm with its AVX2 heuristics:
  oneDNN's kernels on, and an x86 CPU with AVX2 but not AVX-512 (oneDNN's avx512_core: F,
  BW, VL, DQ)."""
  flags = _cpu_flags()
  avx512_core = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
  return bool(_pywrap_util_port.IsMklEnabled()) and "avx2" in flags and not avx512_core


def onednn_avx2_sgemm() -> bool:
  """Whether graphs are built for oneDNN's AVX2 sgemm: the machine's answer, unless a test or
  benchmark assumes one (``assume_onednn_avx2_sgemm``)."""
  return machine_runs_onednn_avx2_sgemm() if _assumed is None else _assumed


@contextlib.contextmanager
def assume_onednn_avx2_sgemm(enabled: bool):
  """Graphs built inside are built as for oneDNN's AVX2 sgemm (True) or as for any other
  kernel (False), whatever the machine: for tests, and for benchmarks that build both side
  by side. Mesh-TF builds TensorFlow ops when it lowers, so lower inside too."""
  global _assumed
  previous, _assumed = _assumed, enabled
  try:
    yield
  finally:
    _assumed = previous


def direct_transposed_products() -> bool:
  """Whether a . b^T with a large weight b runs as one matmul with transpose_b (True) rather
  than as (b . a^T)^T (see the module docstring)."""
  return onednn_avx2_sgemm()


def forward_padding(rows: float, columns: int, dtype_size: int) -> int:
  """Zero columns to add to a [k, columns] weight multiplied by about ``rows`` rows.

  PAD_COLUMNS where the product would take oneDNN's slow no-copy path (see the module
  docstring): float32, a row stride that is a multiple of 256 elements, few enough rows, and
  oneDNN's AVX2 sgemm on this machine; otherwise 0. So 16 for 256 rows by a [512, 2048]
  float32 weight (1/256 + 1/2048 = 0.0044), 0 for 1024 rows (0.0015) or a [512, 2000] weight.
  """
  if dtype_size != 4 or columns % BAD_ROW_STRIDE_MULTIPLE:
    return 0
  if rows <= 0 or 1.0 / rows + 1.0 / columns < NOCOPY_THRESHOLD:
    return 0
  return PAD_COLUMNS if onednn_avx2_sgemm() else 0
