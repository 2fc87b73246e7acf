"""The gin file of one exact imported model (sizes, layer lists, router settings).

The file is complete on its own after mesh-tf's defaults.gin (as ``switch_mesh_transformer``
loads it): it includes t5's ``models/bi_v1.gin`` (relative attention, shared bias per stack)
and ``dataset.gin``, then binds every size the checkpoint fixes. Layer lists give one period
of the HF sparse pattern and repeat it, so that the variable names are those of
``names.variable_table``.
"""

from mtf_switch.convert.spec import ConversionError, ModelSpec, block_period

DEFAULT_INPUTS_LENGTH, DEFAULT_TARGETS_LENGTH = 512, 114


def _layer_list(spec: ModelSpec, stack: str) -> str:
  sparse = spec.encoder_sparse if stack == "encoder" else spec.decoder_sparse
  period = block_period(sparse)
  names = []
  for is_sparse in sparse[:period]:
    names.append("@transformer_layers.SelfAttention")
    if stack == "decoder":
      names.append("@transformer_layers.EncDecAttention")
    names.append("@mtf_switch.SwitchFFN" if is_sparse else "@transformer_layers.DenseReluDense")
  body = ",\n    ".join(names)
  return (f"{stack}/make_layer_stack.layers = [\n    {body}]\n"
          f"{stack}/make_layer_stack.num_layers = {len(sparse) // period}\n")


def model_gin(spec: ModelSpec, source: str, inputs_length: int = DEFAULT_INPUTS_LENGTH,
              targets_length: int = DEFAULT_TARGETS_LENGTH, dtype: str = "float32") -> str:
  """Gin text for ``spec``; ``source`` is named in the header; ``dtype`` is the
  checkpoint's variable dtype (Mesh-TF's master_dtype, bfloat16 unless told)."""
  dense_activation = ('["gelu", "linear"]' if spec.activation == "gelu" else
                      '["relu", "linear"]') if spec.gated else f'"{spec.activation}"'
  lines = [
      f"# {spec.model_type} model imported from {source} by mtf_switch.convert.",
      f"# {spec.num_layers} encoder + {spec.num_decoder_layers} decoder blocks, d_model "
      f"{spec.d_model}, d_ff {spec.d_ff}, {spec.num_heads} heads of {spec.d_kv}, vocabulary "
      f"{spec.vocab_size}"
      + (f", {spec.num_experts} experts (capacity {spec.expert_capacity} per sequence)"
         if spec.is_switch else "") + ".",
      "include 'models/bi_v1.gin'",
      "include 'dataset.gin'",
      "import mtf_switch",
      "",
      f"d_model = {spec.d_model}",
      f"d_ff = {spec.d_ff}",
      f"d_kv = {spec.d_kv}",
      f"num_heads = {spec.num_heads}",
      "# Pre-training dropout is off in the released models; recipes/finetune.gin sets 0.1.",
      "dropout_rate = 0.0",
      "# HF keeps weights and activations in float32 unless told otherwise.",
      'activation_dtype = "float32"',
      "# The dtype the checkpoint holds the weights in (Mesh-TF's default is bfloat16).",
      f'utils.get_variable_dtype.master_dtype = "{dtype}"',
      "utils.tpu_mesh_shape.tpu_topology = None",
      "",
      f"Unitransformer.shared_embedding_and_softmax_weights = {spec.tied_logits}",
      f"Bitransformer.shared_embedding = {not spec.separate_input_embeddings}",
      f"transformer.sublayer_rms_norm.epsilon = {spec.layer_norm_epsilon!r}",
      "transformer_layers.SelfAttention.relative_attention_num_buckets = "
      f"{spec.relative_attention_num_buckets}",
      f"DenseReluDense.activation = {dense_activation}",
      "DenseReluDense.hidden_size = %d_ff",
      "",
      _layer_list(spec, "encoder"),
      _layer_list(spec, "decoder"),
  ]
  if spec.vocab_is_padded:
    lines += [
        f"# Mesh-TF pads the vocabulary to {spec.mtf_vocab_size}; ids >= {spec.vocab_size} are "
        "zero rows, their logits masked:",
        "import mtf_switch.convert.vocab_mask",
        f"mtf_switch.hf_vocab.size = {spec.vocab_size}",
        ""]
  lines.append(f"utils.run.sequence_length = {{'inputs': {inputs_length}, "
               f"'targets': {targets_length}}}")
  if spec.is_switch:
    expert_activation = spec.activation
    if spec.gated:
      # The experts' GEGLU is mtf_switch's "geglu" (experts.ACTIVATIONS); no gated ReLU there.
      if spec.activation != "gelu":
        raise ConversionError(f"gated {spec.activation!r} experts are not supported; the "
                              f"project's gated expert is GEGLU ('geglu')")
      expert_activation = "geglu"
    lines += [
        "# HF's routing: every sequence is one group with an absolute capacity, tokens in",
        "# position order (group_size = the sequence length of each stack: keep these equal",
        "# to utils.run.sequence_length when you change it).",
        f"mtf_switch.SwitchFFN.num_experts = {spec.num_experts}",
        "mtf_switch.SwitchFFN.hidden_size = %d_ff",
        f'mtf_switch.SwitchFFN.activation = "{expert_activation}"',
        f"mtf_switch.SwitchFFN.fixed_expert_capacity = {spec.expert_capacity}",
        f"encoder/mtf_switch.SwitchFFN.group_size = {inputs_length}",
        f"decoder/mtf_switch.SwitchFFN.group_size = {targets_length}",
        "# HF's training settings: multiplicative jitter U(1 - eps, 1 + eps) on the router",
        "# input, load-balancing and z-loss coefficients (router_aux_loss_coef, _z_loss_coef).",
        'mtf_switch.SwitchFFN.router_policy_train = "input_jitter"',
        'mtf_switch.SwitchFFN.router_policy_eval = "argmax"',
        f"mtf_switch.SwitchFFN.jitter_eps = {spec.router_jitter_noise!r}",
        f"mtf_switch.SwitchFFN.load_balance_loss_coef = {spec.router_aux_loss_coef!r}",
        f"mtf_switch.SwitchFFN.z_loss_coef = {spec.router_z_loss_coef!r}",
    ]
  return "\n".join(lines) + "\n"
