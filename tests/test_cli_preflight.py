"""switch_cli's pre-flight checks and dtype request, one function at a time (no CLI process)."""

import os
import time

import pytest
import tensorflow.compat.v1 as tf

from switch_cli import dtypes, preflight


def _touch(path, age_seconds=0.0):
  path.write_bytes(b"x")
  stamp = time.time() - age_seconds
  os.utime(path, (stamp, stamp))


def _fake_checkpoint(model_dir, step):
  model_dir.mkdir(exist_ok=True)
  _touch(model_dir / f"model.ckpt-{step}.index")


def test_modes_that_read_a_checkpoint_fail_at_once_on_an_empty_directory(tmp_path):
  for mode in ("perplexity_eval", "eval", "infer", "score_from_dataset", "export_infer"):
    with pytest.raises(preflight.PreflightError, match=f'mode = "{mode}".*{tmp_path}.*has none'):
      preflight.check_checkpoint_present(str(tmp_path), mode)
  preflight.check_checkpoint_present(str(tmp_path), "train")  # training starts from nothing
  _fake_checkpoint(tmp_path, 4)
  preflight.check_checkpoint_present(str(tmp_path), "perplexity_eval")


def test_training_to_a_step_already_saved_says_nothing_was_trained(tmp_path):
  _fake_checkpoint(tmp_path, 8)
  message = preflight.nothing_to_train(str(tmp_path), "train", 8)
  assert message.startswith("Nothing was trained") and "step 8" in message
  assert "train_steps = 8" in message
  assert preflight.nothing_to_train(str(tmp_path), "train", 5).startswith("Nothing was trained")
  assert preflight.nothing_to_train(str(tmp_path), "train", 9) is None
  assert preflight.nothing_to_train(str(tmp_path), "perplexity_eval", 5) is None


def test_only_old_temporary_checkpoint_files_are_stale(tmp_path):
  stale = ["model.ckpt-4.meta.tmp9f2c1e0b7a6d4c3b", "checkpoint.tmp0a1b2c3d4e5f",
           "model.ckpt-4_temp"]
  kept = ["model.ckpt-4.meta", "model.ckpt-4.index", "model.ckpt-4.data-00000-of-00001",
          "checkpoint", "notes.tmp1234", "graph.pbtxt"]
  for name in stale[:2] + kept:
    _touch(tmp_path / name, age_seconds=60)
  (tmp_path / stale[2]).mkdir()
  os.utime(tmp_path / stale[2], (time.time() - 60,) * 2)
  _touch(tmp_path / "model.ckpt-8.meta.tmpabcdef012345")  # written after this run started
  started = time.time() - 1
  removed = preflight.remove_stale_temporary_files(str(tmp_path), started)
  assert sorted(os.path.basename(p) for p in removed) == sorted(stale)
  assert sorted(os.listdir(tmp_path)) == sorted(kept + ["model.ckpt-8.meta.tmpabcdef012345"])


def test_a_second_trainer_in_one_directory_is_refused(tmp_path):
  lock = preflight.lock_for_training(str(tmp_path))
  try:
    with pytest.raises(preflight.PreflightError, match=f"pid {os.getpid()}.*{tmp_path}"):
      preflight.lock_for_training(str(tmp_path))
  finally:
    lock.close()
  preflight.lock_for_training(str(tmp_path)).close()  # released with its holder


def test_mismatch_names_the_variables_and_the_command_that_made_the_directory(tmp_path):
  (tmp_path / "commands").mkdir()
  (tmp_path / "commands" / "command").write_text(
      "t5_mesh_transformer --gin_file=models/switch_tiny.gin")
  graph = {"encoder/layer_003/DenseReluDense/wi/kernel": [128, 512], "shared/embedding": [8, 4]}
  saved = {"encoder/layer_003/SwitchFFN/experts/wi": [8, 128, 512], "shared/embedding": [8, 2],
           "shared/embedding_slot_vc": [8]}
  message = preflight.describe_mismatch(str(tmp_path), "model.ckpt-3", graph, saved)
  assert "holds a checkpoint of a different model (model.ckpt-3)" in message
  assert "1 of this model's 2 variables are not in it (encoder/layer_003/DenseReluDense" in message
  assert "shared/embedding: model [8, 4] vs saved [8, 2]" in message
  assert "1 variables this model lacks (encoder/layer_003/SwitchFFN/experts/wi)" in message
  assert "created by: t5_mesh_transformer --gin_file=models/switch_tiny.gin" in message
  assert preflight.describe_mismatch(str(tmp_path), "c", {"a": [2]}, {"a": [2], "b": [1]}) is None


def test_checkpoint_hook_compares_the_built_graph_with_the_checkpoint(tmp_path):
  with tf.Graph().as_default():
    tf.get_variable("dense/kernel", [3, 4])
    with tf.Session() as session:
      session.run(tf.global_variables_initializer())
      tf.train.Saver().save(session, str(tmp_path / "model.ckpt"), global_step=2)
  with tf.Graph().as_default():
    tf.get_variable("dense/kernel", [3, 4])
    preflight.CheckpointMatchesModelHook(str(tmp_path)).begin()  # same model: no error
  with tf.Graph().as_default():
    tf.get_variable("switch/experts", [2, 3, 4])
    with pytest.raises(preflight.PreflightError, match="switch/experts.*dense/kernel"):
      preflight.CheckpointMatchesModelHook(str(tmp_path)).begin()


def test_an_unloadable_vocabulary_fails_naming_its_file(tmp_path):
  import seqio

  path = tmp_path / "not_a_model.model"
  path.write_text("just text\n")
  with pytest.raises(preflight.PreflightError, match=f"{path}.*SentencePiece"):
    preflight.check_vocabulary(seqio.SentencePieceVocabulary(str(path)))


def test_dtypes_a_cpu_run_cannot_honour_are_errors():
  ok = {dtypes.SLICE: "float32", dtypes.ACTIVATION: "bfloat16"}
  dtypes.check_cpu_request(ok)
  with pytest.raises(ValueError, match='activation_dtype = .float16.'):
    dtypes.check_cpu_request({**ok, dtypes.ACTIVATION: "float16"})
  with pytest.raises(ValueError, match='slice_dtype = .bfloat16.'):
    dtypes.check_cpu_request({**ok, dtypes.SLICE: "bfloat16"})
