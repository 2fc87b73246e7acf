"""The released Switch and T5 v1.1 checkpoints' HF configs, and their gin files.

    python -m mtf_switch.convert.released     # rewrites gin/models/released/*.gin

Each gin file is ``gin.model_gin`` of the config below, so it is exactly the file
``from-hf`` writes for that download (sizes, sparse layers, HF's per-sequence capacity);
tests/test_hf_released.py checks the committed files against these configs.

Sources (the Hub's config.json files, as the search index holds them; no download here):
  switch-base-32   https://huggingface.co/google/switch-base-32/blame/main/config.json
  switch-base-256  https://huggingface.co/google/switch-base-256/blame/106eddc/config.json
  switch-c-2048    https://huggingface.co/google/switch-c-2048/blob/refs%2Fpr%2F6/config.json
The Base family's files differ only in num_experts (8 ... 256); base-8/16/64/128 are that
config with their expert count (their own files were not in the index: verify on download,
``from-hf`` refuses any mismatching tensor). T5 v1.1 (google/t5-v1_1-*) is T5Config with
feed_forward_proj "gated-gelu" and tie_word_embeddings false, sizes as in Table 9's T5 rows.
switch-large-128: the fields of its Hub config.json as issue 26 records them (d_model 1024,
d_ff 4096, 16 heads, 24 + 24 blocks, 12 + 12 sparse, 128 experts, relu, expert_capacity 64,
vocabulary 32128, tied); d_kv 64 and the remaining fields as the Base family's (not seen:
``from-hf`` follows the tensors and names any difference). flaxformer's T5X gin
(t5x/configs/moe/models/switch_large.gin) agrees on sizes, layers and experts.
switch-xxl-128 (no download here; what its tensors hold is read from the code that wrote them):
  config.json
    https://huggingface.co/google/switch-xxl-128/commit/13cda2d3fb4ae78084f4bbc82aeae377a8910ffe
    ("config.json (#2)"; the index shows its first 32 of 70 lines): d_ff 10240, d_kv 64,
    d_model 4096, dense_act_fn "gelu", encoder_sparse_step 2, decoder_sparse_step 2,
    expert_capacity 64, feed_forward_proj "gelu", is_gated_act false, num_layers 48,
    num_decoder_layers 12, num_experts 128, num_heads 64, num_sparse_*_layers 12,
    relative_attention_max_distance 128, relative_attention_num_buckets 32, router_bias false.
  T5X gin      google/flaxformer flaxformer/t5x/configs/moe/models/switch_xxl.gin: 24 encoder and
    24 decoder layers, 64 heads of 64, EMBED_DIM 4096, MLP_DIM 10240, 128 experts, 12 + 12
    sparse (layout MIXED: layer i sparse iff i % 2 == 1, moe_architecture._is_sparse_layer),
    activations ('gelu', 'linear') for dense.MlpBlock and expert/dense.MlpBlock (GEGLU; flax's
    gelu is the tanh approximation, HF's "gelu_new", Mesh-TF's gelu), and a separate output
    logits layer (SparseDecoder.output_logits_factory = DenseGeneral).
  The files    huggingface/transformers .../switch_transformers/convert_big_switch.py (its
    default input is ".../switch-xxl-128/checkpoint_634600") writes the T5X tensors renamed by
    rename_keys, without an HF model in between: layers_i -> block.i, mlp/wi_0 -> mlp.wi_0,
    mlp/expert/wi_0 -> mlp.experts.expert_e.wi_0, token_embedder -> shared, logits_dense ->
    lm_head (so "decoder.lm_head.weight"; IST-DASLab/qmoe switch.py loads exactly
    "shared.weight" and "decoder.lm_head.weight" for switch-xxl-128).
  So the tensors hold 24 + 24 blocks, sparse at the odd ones, GEGLU in every FFN (wi_0, wi_1,
  wo), one input embedding for both stacks and a separate softmax; the gin file below follows
  them. config.json's sizes, heads, experts, capacity, buckets and router_bias are used; its
  unseen lines (router jitter and loss coefficients, tie_word_embeddings, ...) are taken as the
  Base family's, and the softmax untied as the T5X gin says.

Where the release differs from the paper (Table 9):
* Switch-Base: ReLU experts and FFNs of d_ff 3072 (Table 9: GEGLU 2048; same parameters),
  tied embedding and softmax (paper_common.gin unties), 6 sparse FFNs per stack (every other);
  expert capacity 64 tokens per sequence, not a capacity factor over groups of 1024.
* Switch-C: 30 heads (Table 9: 32); and the config in PR #6 says 12 decoder layers with 15
  sparse ones, which transformers builds as 12 dense decoder layers (15 // 12 gives step 0):
  the checkpoint's decoder experts would then be unknown tensors, and ``from-hf`` says so.
  The gin file here follows the paper (15 + 15 layers, every FFN sparse).
* Switch-XXL: Table 9 prints 64 experts; the release has 128 (which the 395B needs, see
  gin/models/switch_xxl.gin). Its config.json says 48 + 12 blocks where the tensors hold
  24 + 24 (HF's stored step 2 would build 48 encoder blocks, 24 of them sparse, and 12
  decoder blocks), exact GELU ("gelu") where T5X used the tanh one, and no gating: transformers
  (5.24) cannot run this release (one wi per FFN). ``from-hf`` imports it as its tensors say
  (structure.py: gating from wi_0/wi_1, the softmax from decoder.lm_head.weight, config.json's
  "gelu" read as the tanh GELU because the tensors are gated; one line per difference), into
  exactly the gin file below at the download's widths (tests/test_hf_switch_xxl_release.py).
  docs/conversion.md has the details.
"""

import dataclasses
import os

from mtf_base import paths
from mtf_switch.convert import imported_gin
from mtf_switch.convert.spec import ModelSpec, from_hf_config

RELEASED_DIR = os.path.join(paths.gin_dir(), "models", "released")

_SWITCH_BASE = {
    "model_type": "switch_transformers", "d_ff": 3072, "d_kv": 64, "d_model": 768,
    "dense_act_fn": "relu", "expert_capacity": 64, "is_encoder_decoder": True,
    "layer_norm_epsilon": 1e-06, "num_decoder_layers": 12, "num_heads": 12, "num_layers": 12,
    "num_sparse_decoder_layers": 6, "num_sparse_encoder_layers": 6,
    "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
    "router_aux_loss_coef": 0.001, "router_bias": False, "router_dtype": "float32",
    "router_ignore_padding_tokens": False, "router_jitter_noise": 0.01,
    "router_z_loss_coef": 0.001, "vocab_size": 32128}
_SWITCH_C = {
    "model_type": "switch_transformers", "d_ff": 6144, "d_kv": 64, "d_model": 2080,
    "dense_act_fn": "relu", "expert_capacity": 64, "is_encoder_decoder": True,
    "layer_norm_epsilon": 1e-06, "num_decoder_layers": 15, "num_experts": 2048, "num_heads": 30,
    "num_layers": 15, "num_sparse_decoder_layers": 15, "num_sparse_encoder_layers": 15,
    "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
    "router_aux_loss_coef": 0.001, "router_bias": False, "router_dtype": "float32",
    "router_ignore_padding_tokens": False, "router_jitter_noise": 0.01,
    "router_z_loss_coef": 0.001, "vocab_size": 32128}


def _t5_v11(d_model, d_ff, heads, layers):
  return {"model_type": "t5", "d_model": d_model, "d_ff": d_ff, "d_kv": 64, "num_heads": heads,
          "num_layers": layers, "num_decoder_layers": layers, "feed_forward_proj": "gated-gelu",
          "tie_word_embeddings": False, "layer_norm_epsilon": 1e-06, "vocab_size": 32128,
          "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128}


RELEASED = {f"switch_base_{n}": dict(_SWITCH_BASE, num_experts=n)
            for n in (8, 16, 32, 64, 128, 256)}
RELEASED["switch_large_128"] = dict(
    _SWITCH_BASE, d_model=1024, d_ff=4096, num_heads=16, num_layers=24, num_decoder_layers=24,
    num_sparse_encoder_layers=12, num_sparse_decoder_layers=12, num_experts=128)
RELEASED["switch_c_2048"] = _SWITCH_C
# switch-xxl-128: config.json's values, then what its tensors hold where config.json differs
# (module docstring). The GEGLU has no HF config field: GATED marks it.
SWITCH_XXL_128_CONFIG = dict(
    _SWITCH_BASE, d_ff=10240, d_kv=64, d_model=4096, dense_act_fn="gelu",
    encoder_sparse_step=2, decoder_sparse_step=2, expert_capacity=64, num_layers=48,
    num_decoder_layers=12, num_experts=128, num_heads=64, num_sparse_encoder_layers=12,
    num_sparse_decoder_layers=12)
SWITCH_XXL_128_TENSORS = dict(num_layers=24, num_decoder_layers=24, dense_act_fn="gelu_new",
                              tie_word_embeddings=False)
RELEASED["switch_xxl_128"] = dict(SWITCH_XXL_128_CONFIG, **SWITCH_XXL_128_TENSORS)
GATED = frozenset({"switch_xxl_128"})
RELEASED["t5_v1_1_base"] = _t5_v11(768, 2048, 12, 12)
RELEASED["t5_v1_1_large"] = _t5_v11(1024, 2816, 16, 24)
RELEASED["t5_v1_1_xxl"] = _t5_v11(4096, 10240, 64, 24)
HUB_NAMES = {key: "google/" + key.replace("_", "-").replace("t5-v1-1", "t5-v1_1")
             for key in RELEASED}


def released_spec(key: str) -> ModelSpec:
  """The model the release's tensors hold (``RELEASED[key]``, gated experts for GATED)."""
  spec = from_hf_config(RELEASED[key], where=HUB_NAMES[key])
  return dataclasses.replace(spec, gated=True) if key in GATED else spec


def released_gin(key: str) -> str:
  return imported_gin.model_gin(released_spec(key),
                                HUB_NAMES[key] + " (config.json; see mtf_switch/convert/released.py)")


def main() -> None:
  os.makedirs(RELEASED_DIR, exist_ok=True)
  for key in RELEASED:
    with open(os.path.join(RELEASED_DIR, key + ".gin"), "w") as f:
      f.write(released_gin(key))
    print(os.path.join("gin", "models", "released", key + ".gin"))


if __name__ == "__main__":
  main()
