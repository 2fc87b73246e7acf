"""The experts: a batch of independent feed-forward networks over an ``experts`` dimension.

Experts know nothing about routing; they map [experts, ..., d_model] to [experts, ..., d_model]
with per-expert weights wi: [experts, d_model, expert_hidden] (wi_0 and wi_1 for gated
activations) and wo: [experts, expert_hidden, d_model].
"""

import mesh_tensorflow as mtf

# Name -> the activation list mtf.layers.dense_product multiplies together. "geglu" is
# Table 9's FFN_GEGLU (Shazeer 2020): gelu(x W_0) * (x W_1).
ACTIVATIONS = {
    "relu": ["relu"],
    "gelu": ["gelu"],
    "geglu": ["gelu", "linear"],
    "swiglu": ["swish", "linear"],
}

HIDDEN_DIM_NAME = "expert_hidden"


def check_activation(activation: str) -> None:
  if activation not in ACTIVATIONS:
    raise ValueError(
        f"unknown expert activation={activation!r}; expected one of {sorted(ACTIVATIONS)}")


def expert_ffn(expert_inputs: mtf.Tensor, experts_dim: mtf.Dimension, hidden_size: int,
               activation: str, dropout_rate: float, train: bool,
               variable_dtype: mtf.VariableDType, init_scale: float) -> mtf.Tensor:
  """Runs every expert's FFN on its own slots.

  Args:
    expert_inputs: [experts, ..., d_model].
    experts_dim: the experts dimension (each expert gets its own weights).
    hidden_size: d_ff of each expert.
    activation: a key of ACTIVATIONS.
    dropout_rate: expert dropout on the hidden layer (the paper fine-tunes with 0.4).
    train: dropout applies only when training.
    variable_dtype: weight storage and compute dtypes.
    init_scale: s in the truncated-normal sigma = sqrt(s / fan_in).

  Returns:
    [experts, ..., d_model], same shape as expert_inputs.
  """
  check_activation(activation)
  model_dim = expert_inputs.shape.dims[-1]
  hidden_dim = mtf.Dimension(HIDDEN_DIM_NAME, hidden_size)
  initializer = mtf.layers.VarianceScalingInitializer(scale=init_scale)
  hidden = mtf.layers.dense_product(
      expert_inputs, reduced_dims=[model_dim], new_dims=[hidden_dim],
      activation_functions=ACTIVATIONS[activation], expert_dims=[experts_dim],
      use_bias=False, variable_dtype=variable_dtype, kernel_initializer=initializer,
      name="wi")
  if train and dropout_rate > 0.0:
    hidden = mtf.dropout(hidden, is_training=True, keep_prob=1.0 - dropout_rate)
  return mtf.layers.dense(
      hidden, model_dim, reduced_dims=[hidden_dim], expert_dims=[experts_dim], use_bias=False,
      variable_dtype=variable_dtype, kernel_initializer=initializer, name="wo")
