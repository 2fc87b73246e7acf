"""The conversion tests' tiny random HF models and HF's own run, under the name the tests use.

They live in switch_experiments/hf_tiny.py: a command (tools/hf_parity_full_size.py) needs HF's
reference run too, and commands may not import tests (docs/ARCHITECTURE.md).
"""

from switch_experiments.hf_tiny import (  # noqa: F401
  BATCH,
  INPUTS_LENGTH,
  TARGETS_LENGTH,
  VOCAB,
  HFRouting,
  HFRun,
  hf_run,
  ids,
  switch_model,
  t5_v11_model,
)
