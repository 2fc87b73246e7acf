"""The variable and activation dtypes the user's gin asks for, honoured on CPU.

Mesh-TF's ``defaults.gin`` binds bfloat16 activations (a TPU default), and t5's
``mesh_transformer_main``, when ``--tpu`` is not given, re-binds
``utils.get_variable_dtype.slice_dtype`` and ``.activation_dtype`` to float32 *after* the user's
gin is parsed: on CPU a bfloat16 request was dropped without a word. Here instead:

1. Parsing (``switch_cli.gin_parse``, in place of mesh-tf's ``parse_gin_defaults_and_flags``): after
   ``defaults.gin`` and before the user's files, the CPU defaults (float32 for both) are bound
   in place of defaults.gin's TPU choice. So what is bound once the user's files and
   ``--gin_param`` are parsed is the user's request, or the CPU default, never the TPU default.
2. That request is resolved (``utils.get_variable_dtype()``: macros such as
   ``activation_dtype = "bfloat16"`` followed) and checked against what the run can honour.
3. Just before ``utils.run``, after t5's re-binding, ``restore`` binds the request again.

With ``--tpu`` nothing is changed: t5 then keeps every binding itself.
"""

import dataclasses
from typing import Optional

import gin
from switch_cli import PreflightError

SLICE = "utils.get_variable_dtype.slice_dtype"
ACTIVATION = "utils.get_variable_dtype.activation_dtype"
CPU_DEFAULTS = {SLICE: "float32", ACTIVATION: "float32"}
# What a CPU run can honour. bfloat16 activations run (emulated, so no faster); variables in
# memory must be float32 to train (mesh-tf's get_variable_dtype says so), and float16 has no
# loss scaling anywhere in mesh-tf.
CPU_SUPPORTED = {ACTIVATION: ("float32", "bfloat16"), SLICE: ("float32",)}


@dataclasses.dataclass
class RequestedDtypes:
  """The slice and activation dtypes of the user's gin; None until the gin is parsed."""
  on_cpu: Optional[bool] = None
  values: Optional[dict] = None  # binding name -> dtype name

  def restore(self) -> None:
    """Re-binds the request over t5's CPU re-binding (call just before utils.run)."""
    if not self.on_cpu or self.values is None:
      return
    with gin.unlock_config():
      for name, value in self.values.items():
        gin.bind_parameter(name, value)


def _resolved_request(get_variable_dtype) -> dict:
  """{binding: dtype name} of what the parsed gin asks for, or a ValueError naming it."""
  try:
    variable_dtype = get_variable_dtype()
  except (TypeError, ValueError) as e:
    raise PreflightError(f"{SLICE} / {ACTIVATION}: not a TensorFlow dtype name ({e})") from None
  return {SLICE: variable_dtype.slice_dtype.name,
          ACTIVATION: variable_dtype.activation_dtype.name}


def check_cpu_request(values: dict) -> None:
  """Raises a PreflightError naming every binding a CPU run cannot honour."""
  bad = [f"{name} = {values[name]!r} (a CPU run supports {' or '.join(CPU_SUPPORTED[name])})"
         for name in CPU_SUPPORTED if values[name] not in CPU_SUPPORTED[name]]
  if bad:
    raise PreflightError(
        "This run cannot honour: " + "; ".join(bad) + ". Remove the binding or bind a "
        "supported value after it (t5's decode gin files, e.g. beam_search.gin, bind "
        f"{SLICE} = \"bfloat16\"), or run on a TPU (--tpu).")


def record_request(requested: RequestedDtypes, get_variable_dtype, on_cpu: bool) -> None:
  """Records (and on CPU checks) what the parsed gin asks for; see the module docstring."""
  requested.on_cpu = on_cpu
  if on_cpu:
    requested.values = _resolved_request(get_variable_dtype)
    check_cpu_request(requested.values)
