"""Temperature-based mixing rates, as in mT5 (Xue et al. 2021, section 2).

A task with ``n`` training examples is sampled at a rate proportional to ``n ** alpha`` with
``alpha = 1 / T``; mT5 uses ``alpha = 0.3`` (T = 3.33...). alpha=1 is examples-proportional
mixing, alpha=0 is uniform: smaller alpha samples small languages more often than their size.
"""

import functools
from typing import Mapping, Optional

import seqio

MT5_ALPHA = 0.3


def temperature_rate_fn(alpha: float = MT5_ALPHA, maximum: Optional[int] = None):
  """A seqio mixture rate function: ``min(n, maximum) ** alpha`` for the task's train size.

  ``n`` is ``task.num_input_examples("train")`` (or the cached count for a cached task), exactly
  as in t5's ``rate_num_examples(temperature=1 / alpha)``, which mT5's mixtures use.
  """
  if not 0.0 < alpha <= 1.0:
    raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
  return functools.partial(seqio.mixing_rate_num_examples, maximum=maximum,
                           temperature=1.0 / alpha)


def temperature_mixing_rates(num_examples: Mapping[str, int], alpha: float = MT5_ALPHA,
                             ) -> dict[str, float]:
  """The normalised sampling probabilities ``n_i ** alpha / sum_j n_j ** alpha``.

  Args:
    num_examples: examples per task (or language).
    alpha: the exponent, 1 / temperature.

  Returns:
    Probabilities per key, summing to 1.
  """
  if not 0.0 < alpha <= 1.0:
    raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
  bad = {k: n for k, n in num_examples.items() if n < 0}
  if bad or not num_examples:
    raise ValueError(f"num_examples must be a non-empty mapping of counts >= 0, got {bad or {}}")
  weights = {k: float(n) ** alpha for k, n in num_examples.items()}
  total = sum(weights.values())
  if total == 0:
    raise ValueError("num_examples are all zero: there is nothing to sample")
  return {k: w / total for k, w in weights.items()}


def mixture_rates(mixture: seqio.Mixture) -> dict[str, float]:
  """The normalised rates of a registered mixture's tasks (computes their example counts)."""
  total = mixture.total_rate
  return {task.name: mixture.get_rate(task) / total for task in mixture.tasks}
