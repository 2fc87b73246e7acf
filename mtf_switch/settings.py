"""Checks for the layers' and routers' settings: one place, one message style.

Every setting a user can bind from gin is checked when the layer or router is constructed,
before any TensorFlow op exists. A bad value raises ValueError with a message that names the
parameter and repeats the value (``init_scale must be a finite number > 0, got inf``), so a
typo in a gin file fails at once instead of as NaN losses or a deep TypeError hours later.

Numbers must be real Python (or numpy) numbers, not strings and not booleans: gin passes
``"0.1"`` through as a string, and ``True`` is an int to Python but never a sensible size.
"""

import inspect
import math
import numbers
from typing import Sequence


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name: str, value) -> int:
  """value, if it is an integer >= 1."""
  if not _is_int(value) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def int_in_range(name: str, value, low: int, high: int, what: str = "") -> int:
  """value, if it is an integer with low <= value <= high; ``what`` explains the bounds."""
  if not _is_int(value) or not low <= value <= high:
    raise ValueError(f"{name}={value!r} must be an integer in [{low}, {what or high}]")
  return int(value)


def number(name: str, value, *, low: float = -math.inf, high: float = math.inf,
           low_open: bool = False, high_open: bool = False) -> float:
  """value, if it is a finite real number within the bounds (closed unless *_open)."""
  bounds = (f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            if math.isfinite(high) else
            f"{'> ' if low_open else '>= '}{low:g}")
  if not _is_number(value) or not math.isfinite(value):
    raise ValueError(f"{name} must be a finite number {_in(bounds)}, got {value!r}")
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high:
    raise ValueError(f"{name} must be {_in(bounds)}, got {value!r}")
  return float(value)


def _in(bounds: str) -> str:
  return bounds if bounds[0] in "<>" else f"in {bounds}"


def positive_number(name: str, value) -> float:
  """value, if it is a finite number > 0."""
  return number(name, value, low=0.0, low_open=True)


def nonnegative_number(name: str, value) -> float:
  """value, if it is a finite number >= 0."""
  return number(name, value, low=0.0)


def rate(name: str, value) -> float:
  """value, if it is a probability-like rate in [0, 1)."""
  return number(name, value, low=0.0, high=1.0, high_open=True)


def one_of(name: str, value, options: Sequence[str], prefix: str = "unknown ") -> str:
  """value, if it is one of ``options`` (compared exactly; no case folding)."""
  if not isinstance(value, str) or value not in options:
    raise ValueError(f"{prefix}{name}={value!r}; expected one of {tuple(options)}")
  return value


def boolean(name: str, value) -> bool:
  """value, if it is a bool (``"false"`` would be truthy, so strings are refused)."""
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be True or False, got {value!r}")
  return value


def boolean_or_auto(name: str, value):
  """value, if it is a bool or the string "auto" (any other string is refused, as in boolean)."""
  if value != "auto" and not isinstance(value, bool):
    raise ValueError(f"{name} must be True, False or 'auto', got {value!r}")
  return value


def configurable(cls):
  """gin.configurable(module="mtf_switch") that knows every argument of the __init__ chain.

  The layers and routers pass shared arguments to their bases through **kwargs, which would
  let gin accept any name; listing the real ones makes a typo'd binding fail when the gin
  file is parsed. A class may name more (``_extra_gin_parameters``) that its __init__ takes
  through **kwargs and hands on.
  """
  from mesh_tensorflow.transformer import transformer  # pylint: disable=import-outside-toplevel

  import gin  # pylint: disable=import-outside-toplevel

  names = list(getattr(cls, "_extra_gin_parameters", ()))
  for klass in cls.__mro__:
    init = klass.__dict__.get("__init__")
    if init is None or klass in (transformer.TransformerLayer, object):
      continue
    for param in inspect.signature(init).parameters.values():
      if param.name != "self" and param.kind == param.POSITIONAL_OR_KEYWORD:
        names.append(param.name)
  return gin.configurable(cls, module="mtf_switch", allowlist=sorted(set(names)))
