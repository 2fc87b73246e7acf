"""The experiments' code: benchmarks, paper reproductions, fine-tuning and conversion checks.

Each command in ``tools/`` is a thin ``main`` over one module here of the same name
(``python tools/repro_speedup.py`` runs ``switch_experiments.repro_speedup.main``); the other
modules are what the commands share:

- ``cli_runs``, ``run_results``: start ``switch_mesh_transformer`` runs and read back what
  they wrote (checkpoints, TensorBoard events);
- ``repro_settings``, ``repro_main``, ``repro_runs``, ``repro_curves``, ``repro_report``,
  ``repro_outputs``, ``repro_scaling_plots``: the reproductions' one ``main``, their training
  settings, runs, curves, reports and plots;
- ``bench_rounds``: the training benchmarks' rotating rounds and their table;
- ``paths``: where the checkout's parts are, and the environment of a child command;
- ``hf_tiny``: tiny random Hugging Face models and HF's own logits and routing decisions.

May import ``mtf_switch``, ``tasks`` and ``switch_cli``; never ``tools`` or ``tests``
(tests/test_architecture.py). Importing the package imports nothing else.
"""
