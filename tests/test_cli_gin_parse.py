"""switch_cli's gin parsing step, in process: the dtype request survives t5's CPU re-binding,
dtypes a CPU run cannot honour and unknown or unused task settings are errors at parse time."""

import os
import types

import pytest
import tensorflow.compat.v1 as tf
from mesh_tensorflow.transformer import utils

import gin
import tasks  # noqa: F401  (registers the project's tasks and the text_files configurable)
from switch_cli import PreflightError, gin_parse, preflight
from switch_cli.main import PROJECT_GIN_DIR

SWITCH = ["models/switch_tiny.gin", "mesh/cpu_data_parallel.gin"]
TASK = 'MIXTURE_NAME = "switch_default_corpus_span_corruption"'


def _parse(gin_files, gin_params, tpu=None):
  """Runs the installed parse step as t5's main does, then t5's CPU re-binding; returns the
  dtype request."""
  import t5.models

  flags = types.SimpleNamespace(tpu=tpu, gin_location_prefix=[], gin_file=gin_files,
                                gin_param=gin_params)
  # A stand-in for mesh-tf's utils module, so the real one is not patched by the test.
  fake_utils = types.SimpleNamespace(
      pkg_resources=utils.pkg_resources, __name__=utils.__name__,
      _DEFAULT_CONFIG_FILE=utils._DEFAULT_CONFIG_FILE, get_variable_dtype=utils.get_variable_dtype)
  main = types.SimpleNamespace(utils=fake_utils, FLAGS=flags)
  gin.clear_config()
  gin.add_config_file_search_path(PROJECT_GIN_DIR)
  gin.add_config_file_search_path(os.path.join(os.path.dirname(t5.models.__file__), "gin"))
  requested = gin_parse.install(main, after_parse=[preflight.register_text_files,
                                                   preflight.check_task])
  fake_utils.parse_gin_defaults_and_flags(skip_unknown=False, finalize_config=False)
  if not tpu:  # what t5's mesh_transformer_main does next, when --tpu is not given
    gin.bind_parameter("utils.get_variable_dtype.slice_dtype", "float32")
    gin.bind_parameter("utils.get_variable_dtype.activation_dtype", "float32")
  return requested


@pytest.fixture(autouse=True)
def _clean_gin():
  yield
  gin.clear_config()


def test_bfloat16_macro_request_is_bound_again_after_t5s_cpu_rebinding():
  requested = _parse(SWITCH, [TASK, 'activation_dtype = "bfloat16"'])
  assert utils.get_variable_dtype().activation_dtype == tf.float32  # t5's re-binding
  requested.restore()
  dtype = utils.get_variable_dtype()
  assert (dtype.activation_dtype, dtype.slice_dtype) == (tf.bfloat16, tf.float32)


def test_direct_binding_is_honoured_too():
  requested = _parse(SWITCH, [TASK, 'utils.get_variable_dtype.activation_dtype = "bfloat16"'])
  requested.restore()
  assert utils.get_variable_dtype().activation_dtype == tf.bfloat16


def test_without_a_request_cpu_runs_stay_float32_not_defaults_gin_bfloat16():
  """mesh-tf's defaults.gin binds bfloat16 for TPUs; that is not the user's request. (The paper
  sizes' gin files bind no dtype; the tiny ones do, through the activation_dtype macro.)"""
  requested = _parse(["models/switch_base.gin", "mesh/cpu_data_parallel.gin"], [TASK])
  requested.restore()
  assert utils.get_variable_dtype().activation_dtype == tf.float32


@pytest.mark.parametrize("binding, pattern", [
    ('activation_dtype = "float16"', r"activation_dtype = 'float16' \(a CPU run supports "
                                     r"float32 or bfloat16\)"),
    ('utils.get_variable_dtype.slice_dtype = "bfloat16"', r"slice_dtype = 'bfloat16'"),
    ('activation_dtype = "bf16"', r"activation_dtype: not a TensorFlow dtype name"),
])
def test_dtypes_a_cpu_run_cannot_honour_fail_at_parse_time(binding, pattern):
  with pytest.raises(PreflightError, match=pattern):
    _parse(SWITCH, [TASK, binding])


def test_unknown_task_name_fails_with_close_names():
  with pytest.raises(PreflightError, match=r'"switch_default_corpus_span_corupt" is not a '
                                           r"registered .*Close names: switch_default_corpus_span"):
    _parse(SWITCH, ['MIXTURE_NAME = "switch_default_corpus_span_corupt"'])


def test_text_files_bound_but_another_task_used_is_an_error(tmp_path):
  text = tmp_path / "my.txt"
  text.write_text("".join(f"document number {i} of my own text\n" for i in range(40)))
  with pytest.raises(PreflightError, match=r"text_files.paths = .*my\.txt.* is bound but "
                                           r"MIXTURE_NAME = \"switch_default_corpus"):
    _parse(SWITCH, [TASK, f'text_files.paths = ["{text}"]'])
  # Used as the task, it registers, with its checks: a missing file is named.
  _parse(SWITCH, ['MIXTURE_NAME = "text_files"', f'text_files.paths = ["{text}"]',
                  f'text_files.cache_dir = "{tmp_path}"'])
  with pytest.raises(PreflightError, match=r"text_files.*not found: .*nope\.txt"):
    _parse(SWITCH, ['MIXTURE_NAME = "text_files"', f'text_files.paths = ["{tmp_path}/nope.txt"]'])
