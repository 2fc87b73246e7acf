"""The t5_mesh_transformer command line, end to end, with a tiny Switch model on CPU.

One pre-trained checkpoint for the whole session (the ``pretrained`` fixture of
tests/conftest.py, built by tests/e2e/cli.py's ``pretrain``): train, SIGKILL mid-training,
rerun on a two-language mixture (the global step continues from the last checkpoint). The
tests check that run, evaluate it per language, and from its checkpoint run the Section 4
fine-tuning recipe: recipes/finetune.gin on a GLUE-shaped (SST-2 TSV) task, evaluated for
accuracy with recipes/finetune_eval.gin. The distillation recipe, the HF round trip and the
init-seed check start from the same checkpoint in files of their own. If the pre-training
fails, every test that needs its checkpoint errors with the pre-training's failure (none is
skipped).

Results are read the way the tools read them (tools/run_results.py): from checkpoint files and
TensorBoard events, not from the logs.
"""


from switch_experiments import finetune_sst2, multilingual, run_results
from tests.e2e.cli import LANGUAGES, checkpoint_steps
from tests.e2e.cli import run_cli as _cli


def test_train_sigkill_and_resume(pretrained):
  """The rerun continues the global step from the last checkpoint the killed run saved, and
  no earlier checkpoint is lost."""
  model_dir, before, after = pretrained["model_dir"], pretrained["before"], pretrained["after"]
  assert "SwitchFFN" in open(model_dir / "operative_config.gin").read()
  assert f"model.ckpt-{before[-1]}" in pretrained["resume_log"]  # restored, not re-initialised
  assert after[-1] == before[-1] + 4
  assert before[-1] in after
  scalars = run_results.read_scalars(str(model_dir))
  losses = list(scalars["loss"].values())
  assert losses and all(0.0 < v < 20.0 for v in losses), losses
  dropped = scalars["moe/encoder/block_000/layer_001/SwitchFFN/dropped_fraction"]
  assert dropped and all(0.0 <= v <= 1.0 for v in dropped.values()), dropped


def test_language_mixture_is_evaluated_per_language(pretrained):
  """Section 4.3's set-up in small: the model trained on a temperature-sampled mixture, then
  one perplexity per language, read back the way tools/multilingual.py reads them."""
  workdir, model_dir = pretrained["workdir"], pretrained["model_dir"]
  step = pretrained["after"][-1]
  _cli(workdir, model_dir, LANGUAGES, 'utils.run.mode = "perplexity_eval"',
       'utils.run.dataset_split = "validation"', f"utils.run.eval_checkpoint_step = {step}",
       "utils.run.eval_dataset_fn = @t5.models.mesh_transformer.mesh_eval_dataset_fn",
       "mesh_eval_dataset_fn.mixture_or_task_name = %MIXTURE_NAME")
  per_language = multilingual.per_task(run_results.perplexity_at(str(model_dir), step))
  assert sorted(per_language) == ["e2e_lang_plain", "e2e_lang_upper"], per_language
  assert all(-20.0 < v < 0.0 for v in per_language.values())
  # Two different texts: the upper-cased one is not scored the same as the plain one.
  assert per_language["e2e_lang_plain"] != per_language["e2e_lang_upper"]
  assert [multilingual.language_of(t, sorted(per_language)) for t in sorted(per_language)] == [
      "plain", "upper"]


def test_finetune_recipe_on_a_glue_shaped_task(pretrained):
  """recipes/finetune.gin from the pre-trained checkpoint, every checkpoint evaluated with
  recipes/finetune_eval.gin, read back the way tools/finetune_sst2.py reads it."""
  workdir, step = pretrained["workdir"], pretrained["after"][-1]
  pretrained = pretrained["model_dir"]
  model_dir = workdir / "finetuned"
  recipe = ["recipes/finetune.gin"]
  _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"', 'utils.run.mode = "train"',
       f'utils.run.init_checkpoint = "{pretrained}/model.ckpt-{step}"',
       f"utils.run.train_steps = {step + 4}", "utils.run.save_checkpoints_steps = 2",
       gin_files=recipe)
  # t5's convention: fine-tuning continues the pre-trained global step.
  assert checkpoint_steps(model_dir)[-2:] == [step + 2, step + 4]
  config = open(model_dir / "operative_config.gin").read()
  assert "expert_dropout_rate = 0.4" in config
  assert "dropout_rate = 0.1" in config
  # Evaluation decodes: the Switch layers run in Mesh-TF's incremental (one token) mode.
  _cli(workdir, model_dir, 'MIXTURE_NAME = "e2e_sst2"', 'utils.run.dataset_split = "validation"',
       f"utils.run.eval_checkpoint_step = {[step + 2, step + 4]}",
       gin_files=recipe + ["recipes/finetune_eval.gin"])
  accuracy = finetune_sst2.dev_metrics(str(model_dir), "e2e_sst2")
  assert sorted(accuracy) == [step + 2, step + 4]
  assert all(0.0 <= v <= 100.0 for v in accuracy.values())
  best = finetune_sst2.best_and_last(accuracy)
  assert best["last_step"] == step + 4 and best["best"] == max(accuracy.values())
