"""The arithmetic and bookkeeping of the Section 4 tools (tools/finetune_sst2.py, distill.py,
multilingual.py), on numbers checked by hand. The CLI runs they drive are tested end to end in
test_cli_end_to_end.py."""


import os

import pytest

from switch_experiments import distill, finetune_sst2, multilingual


def test_gain_kept_by_hand():
  # baseline -2.0, teacher -1.0: a student at -1.7 keeps 30% of the teacher's 1.0 gain.
  assert distill.gain_kept(-1.7, -2.0, -1.0) == pytest.approx(0.3)
  assert distill.gain_kept(-2.0, -2.0, -1.0) == 0.0
  assert distill.gain_kept(-2.5, -2.0, -1.0) == pytest.approx(-0.5)
  # No gain (or a teacher worse than the baseline): the ratio would be meaningless.
  with pytest.raises(ValueError, match=r"teacher \(-1.0000\) is not better .* \(-1.0000\)"):
    distill.gain_kept(-1.5, -1.0, -1.0)
  with pytest.raises(ValueError, match=r"teacher \(-4.6030\) is not better .* \(-4.5981\)"):
    distill.gain_kept(-4.3937, -4.5981, -4.6030)


def test_best_checkpoint_is_the_earliest_of_the_best():
  result = finetune_sst2.best_and_last({200: 80.0, 400: 85.5, 600: 85.5, 800: 84.0})
  assert result == {"best_step": 400, "best": 85.5, "last_step": 800, "last": 84.0}
  with pytest.raises(ValueError, match="no evaluated checkpoints"):
    finetune_sst2.best_and_last({})


def test_per_language_results_from_evaluation_names():
  found = {"eval_switch_fortunes_de_validation_320": -3.0,
           "eval_switch_fortunes_zh_validation_320": -4.0,
           "eval_eval_validation_320": -9.0}
  per_task = multilingual.per_task(found)
  assert per_task == {"switch_fortunes_de": -3.0, "switch_fortunes_zh": -4.0, "eval": -9.0}
  names = ["switch_fortunes_de", "switch_fortunes_zh"]
  assert [multilingual.language_of(n, names) for n in names] == ["de", "zh"]
  assert multilingual.language_of("solo_task", ["solo_task"]) == "solo_task"


def test_majority_baseline_counts_the_validation_targets(tmp_path, monkeypatch):
  import tasks

  monkeypatch.setenv("MTF_SWITCH_CACHE_DIR", str(tmp_path / "cache"))
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(f"a sentence about the number {i} and more words" for i in
                              range(200)) + "\n", encoding="utf-8")
  vocabulary = tasks.cached_vocabulary(str(corpus), str(tmp_path / "vocab"), vocab_size=40)
  sst2 = tmp_path / "glue" / "SST-2"
  sst2.mkdir(parents=True)
  for name, labels in (("train.tsv", "0101"), ("dev.tsv", "11101")):
    rows = [f"sentence {i}\t{label}" for i, label in enumerate(labels)]
    (sst2 / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
  tasks.register_sst2_tsv_task("test_majority_sst2", data_dir=str(tmp_path),
                               vocabulary=vocabulary)
  baseline = finetune_sst2.majority_baseline("test_majority_sst2")
  assert baseline["label"] == "positive"
  assert baseline["accuracy"] == pytest.approx(80.0)
  assert baseline["counts"] == {"positive": 4, "negative": 1}


def test_distill_resumes_only_a_pair_pretrained_with_its_own_recipe(tmp_path, monkeypatch):
  """tools/distill.py shares pre-training directories with tools/finetune_glue.py: a pair that
  finetune_glue pre-trained with the headline's recipe is refused unless distill is given the
  same recipe, and then trains (resumes) with exactly those gin files."""
  trained = []

  def fake_train(model_dir, gin_files, gin_params, steps, **kwargs):
    trained.append((os.path.basename(model_dir), gin_files[2:]))
    raise RuntimeError("stop: TensorFlow would start here")

  monkeypatch.setattr(finetune_sst2.cli_runs, "train", fake_train)
  glue_recipe = {"switch": ["repro/constant_rsqrt.gin", "repro/twin_init.gin"],
                 "dense": ["repro/constant_rsqrt.gin"]}
  for name, gin_files in glue_recipe.items():
    model_dir = finetune_sst2.pretrain_dir(str(tmp_path), name)
    os.makedirs(model_dir)
    open(os.path.join(model_dir, "model.ckpt-2000.index"), "w").close()
    finetune_sst2.write_pretrain_recipe(
        model_dir, finetune_sst2.pretrain_recipe("switch_english_span_corruption", gin_files))
  common = ["--output_dir", str(tmp_path), "--task", "switch_english_span_corruption",
            "--pretrain_steps", "4000"]
  with pytest.raises(SystemExit, match=r"switch was pre-trained with another recipe "
                                       r"\(gin_files: \[\['repro/constant_rsqrt.gin', "
                                       r"'repro/twin_init.gin'\]\] there, \[\[\]\] asked\)"):
    distill.main(common)
  assert trained == []
  with pytest.raises(SystemExit, match=r"gin file 'repro/absent.gin' not found"):
    distill.main([*common, "--pretrain_gin_file", "repro/absent.gin"])
  with pytest.raises(RuntimeError, match="stop"):
    distill.main([*common, "--pretrain_gin_file", "repro/constant_rsqrt.gin",
                  "--switch_pretrain_gin_file", "repro/twin_init.gin"])
  assert trained == [("switch", ["repro/constant_rsqrt.gin", "repro/twin_init.gin"])]


def test_pretraining_without_a_recipe_record_is_refused_before_training(tmp_path, monkeypatch):
  monkeypatch.setattr(finetune_sst2.cli_runs, "train",
                      lambda *a, **k: pytest.fail("trained a directory of unknown recipe"))
  model_dir = finetune_sst2.pretrain_dir(str(tmp_path), "dense")
  os.makedirs(model_dir)
  open(os.path.join(model_dir, "model.ckpt-300.index"), "w").close()
  with pytest.raises(SystemExit, match=r"checkpoints \[300\] but no pretrain_recipe.json"):
    finetune_sst2.pretrain("dense", "switch_pydocs_span_corruption", 400, str(tmp_path))
  with pytest.raises(SystemExit, match=r"checkpoints \[300\] but no pretrain_recipe.json"):
    finetune_sst2.main(["--output_dir", str(tmp_path), "--models", "dense"])


def test_a_teacher_built_by_its_own_gin_file_is_built_so_everywhere(tmp_path, monkeypatch):
  """--switch_gin_file (e.g. 64 experts) changes the teacher's shapes, so it must reach every
  graph that holds the teacher: its pre-training, its evaluation and the distillation (after
  the pair file, whose 8 experts it overrides); the dense models never get it."""
  built = []

  def fake_train(model_dir, gin_files, gin_params, steps, label="", **kwargs):
    built.append(("train", label, gin_files))

  def fake_eval(model_dir, gin_files, gin_params, step, label, *args):
    built.append(("eval", label, gin_files))
    return {"validation": {"switch": -4.0, "dense": -4.2, "student": -4.1}.get(label, -4.15)}

  written = {}
  monkeypatch.setattr(distill.cli_runs, "train", fake_train)
  monkeypatch.setattr(distill.cli_runs, "perplexity_eval", fake_eval)
  monkeypatch.setattr(distill.cli_runs, "write_results",
                      lambda results_dir, name, text, record: written.update(record))
  distill.main(["--output_dir", str(tmp_path), "--results_dir", str(tmp_path / "results"),
                "--pretrain_steps", "20", "--distill_steps", "10",
                "--switch_gin_file", "repro/experts_64.gin"])
  gins = {(kind, label): files for kind, label, files in built}
  experts = "repro/experts_64.gin"
  assert gins[("train", "pretrain-switch")][-1] == experts
  assert gins[("eval", "switch")][-1] == experts
  student = gins[("train", "student")]
  assert student.index(experts) > student.index("recipes/distill_tiny_pair.gin")
  assert experts not in gins[("train", "pretrain-dense")] + gins[("eval", "dense")]
  assert experts not in gins[("train", "init-baseline")]
  with open(finetune_sst2.pretrain_dir(str(tmp_path), "switch") + "/pretrain_recipe.json") as f:
    assert experts in f.read()
  assert written["gain_kept"] == pytest.approx(0.5)  # (-4.1 + 4.2) / (-4.0 + 4.2), by hand
  # the initialisation-only control (-4.15) takes out the student's extra training
  assert written["distillation_alone"] == pytest.approx(0.05)
  assert written["gain_kept_by_distillation_alone"] == pytest.approx(0.25)  # 0.05 / 0.2
