"""mtf_switch.gin_files.parse_gin: gin loaded as switch_mesh_transformer loads it."""

import logging

import pytest

import gin
from mtf_switch.gin_files import parse_gin


def test_project_files_resolve_after_mesh_tf_defaults():
  parse_gin(["models/switch_tiny.gin"])
  assert gin.query_parameter("mtf_switch.SwitchFFN.num_experts") == 8
  assert gin.query_parameter("%d_model") == 128
  # From mesh-tf's defaults.gin, which no project file binds.
  assert gin.query_parameter("transformer.LayerStack.sublayers_initial")


def test_t5_files_resolve():
  parse_gin(["models/bi_v1.gin"])
  assert gin.query_parameter(
      "transformer_layers.SelfAttention.relative_attention_type") == "bias_shared"


def test_bindings_come_after_the_files():
  parse_gin(["models/switch_tiny.gin"], ["mtf_switch.SwitchFFN.num_experts = 4"])
  assert gin.query_parameter("mtf_switch.SwitchFFN.num_experts") == 4


def test_earlier_configuration_is_cleared():
  parse_gin(["models/switch_tiny.gin"], ["mtf_switch.SwitchFFN.num_experts = 4"])
  parse_gin(["models/t5_tiny.gin"])
  with pytest.raises(ValueError):
    gin.query_parameter("mtf_switch.SwitchFFN.num_experts")


def test_a_missing_file_raises_and_logging_is_restored():
  root = logging.getLogger()
  before = root.level
  with pytest.raises(IOError):
    parse_gin(["models/no_such_model.gin"])
  assert root.level == before
