"""tools/table9.py: its counting rules on a model small enough to count by hand, and Table 9.

The hand counts below are written from the gin files' sizes alone, one term per weight matrix,
so that the graph-based count in the tool is checked against an independent sum. The paper
models are then built as mtf graphs (no weights allocated) and their parameter counts set
against closed-form sums and against Table 9 at the table's precision.
"""

import json

import pytest

import gin
from mtf_switch.gin_files import parse_gin
from switch_experiments import table9

# switch_tiny.gin / t5_tiny.gin sizes.
D_MODEL, D_FF, D_ATTN, HEADS, EXPERTS = 128, 512, 4 * 32, 4, 8
VOCAB, INPUTS, TARGETS = 256, 8, 4
BUCKETS = 32  # relative-attention buckets, one bias table per stack ("bias_shared")


@pytest.fixture(autouse=True)
def _forget_gin_bindings():
  """gin is global: bindings parsed here (activation = "geglu", ...) must not reach the
  layers other test files construct directly."""
  yield
  gin.clear_config()


def _tiny(gin_file):
  graph, model = table9.build_graph(gin_file, inputs_length=INPUTS, targets_length=TARGETS,
                                    vocab_size=VOCAB)
  return table9.count(graph, model, inputs_length=INPUTS, targets_length=TARGETS)


@pytest.fixture(scope="module")
def switch_tiny():
  return _tiny("models/switch_tiny.gin")


@pytest.fixture(scope="module")
def t5_tiny():
  return _tiny("models/t5_tiny.gin")


def test_switch_tiny_parameters_by_hand(switch_tiny):
  attention = 4 * D_MODEL * D_ATTN             # q, k, v, o
  relu_ffn = 2 * D_MODEL * D_FF                # wi, wo
  router = D_MODEL * EXPERTS
  embedding = VOCAB * D_MODEL                  # shared by both stacks and the softmax (tied)
  # Encoder: [attention, dense FFN, attention, Switch]; decoder: [self, enc-dec, dense FFN,
  # self, enc-dec, Switch]. One RMS-norm scale per layer plus a final one per stack.
  encoder = (2 * attention + relu_ffn + router + EXPERTS * relu_ffn
             + (4 + 1) * D_MODEL + HEADS * BUCKETS)
  decoder = (4 * attention + relu_ffn + router + EXPERTS * relu_ffn
             + (6 + 1) * D_MODEL + HEADS * BUCKETS)
  assert switch_tiny.params == embedding + encoder + decoder
  assert switch_tiny.expert_params == 2 * EXPERTS * relu_ffn
  assert switch_tiny.num_experts == [EXPERTS]


def test_switch_tiny_flops_by_hand(switch_tiny):
  attention, relu_ffn = 4 * D_MODEL * D_ATTN, 2 * D_MODEL * D_FF
  # 2 FLOPs per weight per token; the Switch layer costs one expert, the router is apart.
  encoder_per_token = 2 * (2 * attention + relu_ffn + relu_ffn)
  decoder_per_token = 2 * (4 * attention + relu_ffn + relu_ffn)
  # Kaplan's 2 n_ctx d_attn per attention layer: encoder self-attention over the inputs,
  # decoder self-attention over the targets, encoder-decoder attention over the inputs.
  encoder_attention = 2 * (2 * INPUTS * D_ATTN)
  decoder_attention = 2 * (2 * TARGETS * D_ATTN) + 2 * (2 * INPUTS * D_ATTN)
  expected = (INPUTS * (encoder_per_token + encoder_attention)
              + TARGETS * (decoder_per_token + decoder_attention))
  assert switch_tiny.flops == expected
  assert switch_tiny.attention_flops == INPUTS * encoder_attention + TARGETS * decoder_attention
  assert switch_tiny.router_flops == 2 * D_MODEL * EXPERTS * (INPUTS + TARGETS)
  assert switch_tiny.softmax_flops == 0  # tied embedding: no separate logits matrix
  # The enc-dec k and v projections (2 layers) run over the inputs, not just the targets.
  assert switch_tiny.encdec_kv_extra_flops == 2 * 2 * (2 * D_MODEL * D_ATTN) * (INPUTS - TARGETS)


def test_switch_flops_equal_the_dense_twin_but_for_the_router(switch_tiny, t5_tiny):
  assert switch_tiny.flops == t5_tiny.flops
  assert t5_tiny.router_flops == 0
  assert switch_tiny.params - t5_tiny.params == 2 * (
      (EXPERTS - 1) * 2 * D_MODEL * D_FF + D_MODEL * EXPERTS)


def test_top2_experts_cost_two_experts_per_token(switch_tiny):
  moe = _tiny("models/moe_tiny.gin")
  assert moe.params == switch_tiny.params
  one_expert = 2 * (2 * D_MODEL * D_FF)
  assert moe.flops - switch_tiny.flops == one_expert * (INPUTS + TARGETS)


def test_rounding_to_the_table_precision():
  assert table9.params_match(0.2, 1, 248_000_000)
  assert not table9.params_match(0.7, 1, 783_000_000)
  assert table9.params_match(1571, 0, 1_571_400_000_000)
  assert table9.flops_within(124e9, 119e9) and not table9.flops_within(890e9, 980e9)


@pytest.mark.parametrize("row", table9.PAPER, ids=lambda row: row.name)
def test_paper_gin_file_parses(row):
  parse_gin([row.gin_file])


def _closed_form_params(d_model, d_ff, heads, layers, experts=0, expert_every=0, geglu=True,
                        vocab=table9.VOCAB_SIZE, d_kv=64):
  """T5-style encoder-decoder: one embedding shared by both stacks and the softmax (tied, as
  paper_common.gin), relative bias."""
  attention = 4 * d_model * heads * d_kv
  ffn = (3 if geglu else 2) * d_model * d_ff
  moe_layers = layers // expert_every if expert_every else 0
  ffns = (layers - moe_layers) * ffn + moe_layers * (experts * ffn + d_model * experts)
  encoder = layers * attention + ffns + (2 * layers + 1) * d_model + heads * BUCKETS
  decoder = 2 * layers * attention + ffns + (3 * layers + 1) * d_model + heads * BUCKETS
  return vocab * d_model + encoder + decoder


TABLE9_SIZES = {
    "T5-Base": dict(d_model=768, d_ff=2048, heads=12, layers=12),
    "T5-Large": dict(d_model=1024, d_ff=2816, heads=16, layers=24),
    "T5-XXL": dict(d_model=4096, d_ff=10240, heads=64, layers=24),
    "Switch-Base": dict(d_model=768, d_ff=2048, heads=12, layers=12, experts=128, expert_every=2),
    "Switch-Large": dict(d_model=1024, d_ff=2816, heads=16, layers=24, experts=128,
                         expert_every=2),
    "Switch-XXL": dict(d_model=4096, d_ff=10240, heads=64, layers=24, experts=128,
                       expert_every=2),
    "Switch-C": dict(d_model=2080, d_ff=6144, heads=32, layers=15, experts=2048, expert_every=1,
                     geglu=False),
}
# Rows whose own columns do not give the parameter count they print (see the gin files).
KNOWN_MISSES = {"T5-Large", "Switch-Large"}


def _table9_rows():
  for row in table9.PAPER[:7]:
    marks = ()
    if row.name in KNOWN_MISSES:
      marks = pytest.mark.xfail(strict=True, reason="the table's sizes give 0.78B / 27.2B")
    yield pytest.param(row, id=row.name, marks=marks)


@pytest.fixture(scope="module")
def paper_counts():
  cache = {}

  def count(row):
    if row.name not in cache:
      cache[row.name] = table9.count_model(row.gin_file)
    return cache[row.name]
  return count


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in table9.PAPER[:7]])
def test_paper_model_graph_count_equals_closed_form(row, paper_counts):
  assert paper_counts(row).params == _closed_form_params(**TABLE9_SIZES[row.name])


@pytest.mark.parametrize("row", list(_table9_rows()))
def test_paper_model_parameters_match_table9(row, paper_counts):
  assert table9.params_match(row.params, row.params_digits, paper_counts(row).params)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in table9.PAPER[:7]])
def test_paper_model_flops_within_ten_percent(row, paper_counts):
  assert table9.flops_within(row.flops, paper_counts(row).flops)


def test_switch_xxl_with_the_tables_64_experts_is_not_395b(paper_counts):
  """Table 9 prints 64 experts beside Switch-XXL's 395B; the tool's count of the model built
  with 64 experts (the binding reaching the graph) is about half that, as the closed form says."""
  xxl = next(row for row in table9.PAPER if row.name == "Switch-XXL")
  with_64 = table9.count_model(xxl.gin_file, ["mtf_switch.SwitchFFN.num_experts = 64"])
  assert with_64.num_experts == [64]
  assert with_64.params == _closed_form_params(**dict(TABLE9_SIZES["Switch-XXL"], experts=64))
  assert round(with_64.params / 1e9) == 201
  assert paper_counts(xxl).params > 1.9 * with_64.params  # 128 experts: the table's 395B


def test_json_output_is_one_line_for_the_chosen_models(capsys):
  assert table9.main(["--models", "t5_base", "--json"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 1
  summary = json.loads(lines[0])
  assert (summary["inputs_length"], summary["targets_length"]) == (512, 114)
  [row] = summary["rows"]
  assert row["model"] == "T5-Base" and row["params_match"] and row["flops_within_10pct"]
  with pytest.raises(SystemExit):
    table9.main(["--models", "t5_huge"])
