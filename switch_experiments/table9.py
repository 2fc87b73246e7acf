"""Table 9 of the Switch Transformer paper, recomputed from the project's gin model files.

Each model is built the way ``switch_mesh_transformer`` builds it (mesh-tf's defaults.gin, then
the model's gin file, then ``transformer.make_bitransformer``), but only as a Mesh-TF graph:
nothing is lowered, no weight is allocated and nothing is trained. From that graph:

  parameters  = the sum of the sizes of all mtf variables (embeddings, softmax, routers,
                norms and relative-attention biases included).
  FLOPs / seq = forward FLOPs per sequence after Kaplan et al. (2020), the paper's footnote 7:
                per token, 2 x (non-embedding weights the token is multiplied by)
                          + 2 x n_ctx x d_attn for every attention layer,
                with the encoder counted over the input length (512) and the decoder over
                the target length (114), T5's span-corruption pre-training lengths. Expert
                weights count 1/num_experts of their size per token (k/num_experts for a
                top-k layer): one expert's FFN. Not counted: the input embeddings, the
                softmax (logits) matrix, norms and relative-attention biases (Kaplan's
                non-embedding rule), and the router, which is shown in its own column so
                that a Switch model's FLOPs can be set beside its dense twin's. n_ctx is the
                length attended over: the input length for encoder self-attention and
                encoder-decoder attention, the target length for decoder self-attention
                (no halving for the causal mask, as in Kaplan). The decoder's
                encoder-decoder key/value projections are counted per target token like
                every other decoder weight, as the rule says, although they really run over
                the encoder's outputs; ``encdec_kv_extra_flops`` in --json gives what that
                leaves out. Capacity-factor padding and dropped tokens are not counted.

    python tools/table9.py                       # markdown table of Table 9 and Table 1 rows
    python tools/table9.py --models switch_c --json
"""

import argparse
import dataclasses
import json
import os
import time
from typing import Dict, List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from mtf_switch import compat  # noqa: E402,F401  (before any mesh_tensorflow import)
from mtf_switch.gin_files import parse_gin  # noqa: E402  (gin loaded as the CLI loads it)

# T5's SentencePiece vocabulary (32,100 ids) padded by Mesh-TF to a multiple of 128.
VOCAB_SIZE = 32128
INPUTS_LENGTH, TARGETS_LENGTH = 512, 114


@dataclasses.dataclass(frozen=True)
class PaperRow:
  """One model as the paper gives it; params and flops are None where the paper has none."""
  name: str
  gin_file: str
  params: Optional[float]          # billions, as printed
  params_digits: int               # decimals the table prints parameters with
  flops: Optional[float]           # forward FLOPs per sequence, as printed
  flops_text: str
  dense_twin: Optional[str] = None  # the FLOP-matched T5 row
  experts_in_table: Optional[int] = None
  note: str = ""


PAPER = [
    PaperRow("T5-Base", "models/t5_base.gin", 0.2, 1, 124e9, "124B"),
    PaperRow("T5-Large", "models/t5_large.gin", 0.7, 1, 425e9, "425B",
             note="the table's sizes (GEGLU d_ff 2816, tied softmax) give 0.75B; 0.7B is "
                  "T5 v1.0 Large's count (ReLU d_ff 4096, tied softmax: 0.74B by hand)"),
    PaperRow("T5-XXL", "models/t5_xxl.gin", 11, 0, 6.3e12, "6.3T"),
    PaperRow("Switch-Base", "models/switch_base.gin", 7, 0, 124e9, "124B", "T5-Base", 128),
    PaperRow("Switch-Large", "models/switch_large.gin", 26, 0, 425e9, "425B", "T5-Large", 128,
             note="the table's sizes give 27.1B; 26B is what ReLU FFNs of d_ff 4096 give "
                  "(the released checkpoint's sizes, last row)"),
    PaperRow("Switch-XXL", "models/switch_xxl.gin", 395, 0, 6.3e12, "6.3T", "T5-XXL", 64,
             note="Table 9 says 64 experts; 395B needs 128, which the gin file builds"),
    PaperRow("Switch-C", "models/switch_c.gin", 1571, 0, 890e9, "890B", None, 2048),
    # Table 1 rows and a variant that explains a Table 9 figure: no Table 9 numbers.
    PaperRow("MoE-Base (top-2)", "models/moe_base.gin", None, 0, None, "-", "T5-Base", 128,
             note="Table 1; two experts per token"),
    PaperRow("Switch-Base+", "models/switch_base_plus.gin", None, 0, None, "-", None, 128,
             note="Table 1"),
    PaperRow("Switch-Large, released sizes", "models/switch_large_released.gin", None, 0, None,
             "-", None, 128, note="ReLU d_ff 4096 as in the released checkpoint"),
] + [
    # The released checkpoints (Hugging Face google/*), gin files from their config.json
    # (mtf_switch/convert/released.py; switch-xxl-128's from what its tensors hold): no
    # Table 9 figures of their own.
    PaperRow(f"{hub} (released)", f"models/released/{key}.gin", None, 0, None, "-", None,
             None, note=("what its tensors hold, not its config.json (released.py)"
                         if key == "switch_xxl_128" else "released checkpoint's config.json"))
    for key, hub in (("switch_base_8", "switch-base-8"), ("switch_base_16", "switch-base-16"),
                     ("switch_base_32", "switch-base-32"), ("switch_base_64", "switch-base-64"),
                     ("switch_base_128", "switch-base-128"),
                     ("switch_base_256", "switch-base-256"),
                     ("switch_large_128", "switch-large-128"),
                     ("switch_xxl_128", "switch-xxl-128"), ("switch_c_2048", "switch-c-2048"),
                     ("t5_v1_1_base", "t5-v1_1-base"), ("t5_v1_1_large", "t5-v1_1-large"),
                     ("t5_v1_1_xxl", "t5-v1_1-xxl"))
]
KEYS = {row.gin_file.split("/")[-1][:-len(".gin")]: row for row in PAPER}
KEYS_BY_NAME = {row.name: key for key, row in KEYS.items()}


@dataclasses.dataclass
class ModelCount:
  """What the graph of one model adds up to (see the module docstring for the rules)."""
  params: int
  expert_params: int
  flops: float                 # Kaplan forward FLOPs per sequence, router excluded
  router_flops: float
  softmax_flops: float         # the decoder's logits matmul, not in `flops`
  encdec_kv_extra_flops: float  # encoder-decoder K/V over the inputs rather than the targets
  attention_flops: float       # the 2 n_ctx d_attn part of `flops`
  num_experts: List[int]
  build_seconds: float


def _import_mesh_tf():
  import mesh_tensorflow as mtf
  import tensorflow.compat.v1 as tf
  from mesh_tensorflow.transformer import transformer, transformer_layers

  import gin
  import mtf_switch  # noqa: F401  (registers the gin configurables)
  tf.get_logger().setLevel("ERROR")
  return mtf, tf, transformer, transformer_layers, gin


def build_graph(gin_file: str, bindings=(), batch: int = 1,
                inputs_length: int = INPUTS_LENGTH, targets_length: int = TARGETS_LENGTH,
                vocab_size: int = VOCAB_SIZE):
  """Builds the model's mtf graph (one forward pass with loss); returns (mtf_graph, model).

  The caller owns the returned graph's tf.Graph (a fresh default graph is used here).
  """
  mtf, tf, transformer, _, gin = _import_mesh_tf()
  parse_gin([gin_file], bindings)
  graph = tf.Graph()
  with graph.as_default(), gin.config_scope(""):
    mtf_graph = mtf.Graph()
    mesh = mtf.Mesh(mtf_graph, "mesh")
    # No mesh: every mtf dimension is whole, so the layers' split checks pass for any size.
    model = transformer.make_bitransformer(
        input_vocab_size=vocab_size, output_vocab_size=vocab_size, layout="", mesh_shape="")
    batch_dim = mtf.Dimension("batch", batch)

    def ids(length):
      shape = mtf.Shape([batch_dim, mtf.Dimension("length", length)])
      return mtf.import_tf_tensor(mesh, tf.ones([batch, length], tf.int32), shape)

    model.call_simple(ids(inputs_length), ids(targets_length), compute_loss=True,
                      mode=tf.estimator.ModeKeys.EVAL,
                      variable_dtype=mtf.VariableDType(tf.float32))
  return mtf_graph, model


def _experts_per_token(variable_name: str) -> int:
  # The layer's class name is its variable scope. Top-2 counts two experts for every token,
  # an upper bound when the second-expert policy ("random") skips some.
  return 2 if "/MoEFFN/" in variable_name else 1


def _is_embedding(name: str) -> bool:
  # Input embeddings and the untied softmax matrix ("decoder/logits/kernel").
  return name.endswith("embedding") or "/logits/" in name


def _is_matmul_weight(name: str) -> bool:
  # Norm scales multiply elementwise and relative-attention biases are added to the logits:
  # neither is a matmul a token goes through. Everything else here is (kernels, q/k/v/o).
  return not (name.endswith("/scale") or name.endswith("relative_attention_bias"))


def _attention_flops_per_token(layer_stack, self_length: int, memory_length: int) -> float:
  _, _, _, transformer_layers, _ = _import_mesh_tf()
  flops = 0.0
  for layer in layer_stack.layers:
    if not isinstance(layer, transformer_layers.SelfAttention):
      continue
    d_attn = layer.num_heads * layer.key_value_size
    attended = (memory_length if isinstance(layer, transformer_layers.EncDecAttention)
                else self_length)
    flops += 2.0 * attended * d_attn
  return flops


def count(mtf_graph, model, inputs_length: int = INPUTS_LENGTH,
          targets_length: int = TARGETS_LENGTH, build_seconds: float = 0.0) -> ModelCount:
  """Applies the counting rules of the module docstring to a built model graph."""
  tokens = {"encoder": inputs_length, "decoder": targets_length}
  params = expert_params = 0
  flops = router_flops = softmax_flops = encdec_kv_extra = 0.0
  num_experts = set()
  for variable in mtf_graph.all_variables:
    name, shape = variable.name, variable.outputs[0].shape
    size = shape.size
    params += size
    stack = name.split("/")[0]
    if "/logits/" in name:
      softmax_flops += 2.0 * size * tokens[stack]
    if _is_embedding(name) or not _is_matmul_weight(name):
      continue
    per_token = 2.0 * size
    if "experts" in shape.dimension_names:
      experts = shape.get_dim_by_name("experts").size
      num_experts.add(experts)
      expert_params += size
      per_token = 2.0 * size * _experts_per_token(name) / experts
    if "/router/" in name:
      router_flops += per_token * tokens[stack]
      continue
    flops += per_token * tokens[stack]
    if stack == "decoder" and "/EncDecAttention/" in name and name.split("/")[-1] in ("k", "v"):
      encdec_kv_extra += per_token * (inputs_length - targets_length)
  attention = (inputs_length * _attention_flops_per_token(
                   model.encoder.layer_stack, inputs_length, inputs_length)
               + targets_length * _attention_flops_per_token(
                   model.decoder.layer_stack, targets_length, inputs_length))
  return ModelCount(params=params, expert_params=expert_params, flops=flops + attention,
                    router_flops=router_flops, softmax_flops=softmax_flops,
                    encdec_kv_extra_flops=encdec_kv_extra, attention_flops=attention,
                    num_experts=sorted(num_experts), build_seconds=build_seconds)


def count_model(gin_file: str, bindings=()) -> ModelCount:
  started = time.time()
  mtf_graph, model = build_graph(gin_file, bindings)
  return count(mtf_graph, model, build_seconds=time.time() - started)


def params_match(paper_billions: float, digits: int, counted: int) -> bool:
  """Does the count print as the paper's figure, rounded to the paper's decimals?"""
  return round(counted / 1e9, digits) == round(paper_billions, digits)


def flops_within(paper: float, counted: float, tolerance: float = 0.10) -> bool:
  return abs(counted - paper) <= tolerance * paper


def _human(value: float) -> str:
  for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
    if value >= scale:
      return f"{value / scale:.3g}{unit}" if value < 100 * scale else f"{value / scale:.0f}{unit}"
  return f"{value:.0f}"


def _signed(value: float) -> str:
  return "+0" if value == 0 else ("+" if value > 0 else "-") + _human(abs(value))


def _params_text(counted: int) -> str:
  billions = counted / 1e9
  return f"{billions:.3f}B" if billions < 10 else f"{billions:.1f}B"


def evaluate(key: str, counts: Dict[str, ModelCount]) -> dict:
  """One result row: paper figures, counted figures, and the verdicts."""
  row, result = KEYS[key], counts[key]
  out = {"model": row.name, "gin": row.gin_file, "params": result.params,
         "expert_params": result.expert_params, "flops_per_seq": result.flops,
         "router_flops_per_seq": result.router_flops,
         "softmax_flops_per_seq": result.softmax_flops,
         "encdec_kv_extra_flops_per_seq": result.encdec_kv_extra_flops,
         "attention_flops_per_seq": result.attention_flops,
         "num_experts": result.num_experts, "build_seconds": round(result.build_seconds, 2),
         "paper_params_billions": row.params, "paper_flops_per_seq": row.flops,
         "paper_num_experts": row.experts_in_table, "note": row.note}
  if row.params is not None:
    out["params_match"] = params_match(row.params, row.params_digits, result.params)
    out["flops_error"] = round(result.flops / row.flops - 1.0, 4)
    out["flops_within_10pct"] = flops_within(row.flops, result.flops)
  twin = KEYS_BY_NAME.get(row.dense_twin)
  if twin in counts:
    out["dense_twin"] = row.dense_twin
    out["flops_minus_twin"] = result.flops - counts[twin].flops
  return out


def markdown(rows: List[dict]) -> str:
  lines = [
      "| model | params (paper) | params (built) | match | FLOPs/seq (paper) | "
      "FLOPs/seq (built) | error | router FLOPs/seq | FLOPs minus dense twin | experts |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    row = KEYS[KEYS_BY_NAME[r["model"]]]
    paper_params = "-" if row.params is None else f"{row.params:g}B"
    match = "-" if "params_match" not in r else ("yes" if r["params_match"] else "**no**")
    if "flops_error" in r:
      error = f"{r['flops_error']:+.1%}" + ("" if r["flops_within_10pct"] else " **miss**")
    else:
      error = "-"
    twin = (f"{_signed(r['flops_minus_twin'])} vs {r['dense_twin']}"
            if "dense_twin" in r else "-")
    experts = ",".join(str(e) for e in r["num_experts"]) or "-"
    if row.experts_in_table and [row.experts_in_table] != r["num_experts"]:
      experts += f" (table: {row.experts_in_table})"
    lines.append(
        f"| {r['model']} | {paper_params} | {_params_text(r['params'])} | {match} | "
        f"{row.flops_text} | {_human(r['flops_per_seq'])} | {error} | "
        f"{_human(r['router_flops_per_seq']) if r['router_flops_per_seq'] else '-'} | "
        f"{twin} | {experts} |")
  return "\n".join(lines)


def _xxl_with_table_experts() -> dict:
  """Switch-XXL with Table 9's 64 experts, to show the count the table's 395B rules out."""
  result = count_model("models/switch_xxl.gin", ["mtf_switch.SwitchFFN.num_experts = 64"])
  return {"model": "Switch-XXL with 64 experts (Table 9's column)", "params": result.params,
          "flops_per_seq": result.flops, "router_flops_per_seq": result.router_flops}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default=",".join(KEYS),
                      help=f"comma-separated subset of: {', '.join(KEYS)}")
  parser.add_argument("--json", action="store_true", help="print one JSON line instead")
  return parser


def main(argv=None) -> int:
  flags = _parser().parse_args(argv)
  wanted = [m.strip() for m in flags.models.split(",") if m.strip()]
  unknown = [m for m in wanted if m not in KEYS]
  if unknown:
    raise SystemExit(f"unknown model(s) {unknown}; choose from {list(KEYS)}")
  # Dense twins are built too (quickly), so that every Switch row can be set beside its T5.
  needed = list(dict.fromkeys(
      wanted + [KEYS_BY_NAME[KEYS[m].dense_twin] for m in wanted if KEYS[m].dense_twin]))
  counts = {key: count_model(KEYS[key].gin_file) for key in needed}
  rows = [evaluate(key, counts) for key in wanted]
  extra = [_xxl_with_table_experts()] if "switch_xxl" in wanted else []
  summary = {"vocab_size": VOCAB_SIZE, "inputs_length": INPUTS_LENGTH,
             "targets_length": TARGETS_LENGTH, "rows": rows, "extra": extra}
  if flags.json:
    print(json.dumps(summary))
    return 0
  print(f"Forward FLOPs per sequence: {INPUTS_LENGTH} input and {TARGETS_LENGTH} target tokens, "
        f"vocabulary {VOCAB_SIZE}; rules in tools/table9.py's docstring.\n")
  print(markdown(rows))
  print()
  for r in rows:
    if r["note"]:
      print(f"- {r['model']}: {r['note']}.")
  for e in extra:
    print(f"- {e['model']}: {_params_text(e['params'])} parameters, "
          f"{_human(e['flops_per_seq'])} FLOPs/seq.")
  return 0
