"""Inference as a user runs it: an imported HF model, a text file in, a text file out, exit 0.

tools/infer.py runs switch_mesh_transformer's ``infer`` (and ``score_from_strings``) mode on
the imported directory's only checkpoint; before switch_cli/infer.py that mode decoded, wrote
``b'...'`` lines, then waited for new checkpoints for ever.
"""

import os
import subprocess
import sys
import time

import pytest

from mtf_switch.convert import from_hf
from switch_cli import infer
from tests import hf_tiny
from tests.e2e.cli import REPO, make_workdir

# A limit against a hung run (the old behaviour never exits), not a speed check: one CLI run
# took minutes on the shared 2-core machine.
TIME_LIMIT = 900
E2E_VOCAB = 768  # the e2e tasks' 600 pieces + 100 extra ids, padded by Mesh-TF to x128
LINES = ["a joy to watch", "dull and lifeless", "warm , funny and wise"]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf_infer")
  (root / "e2e").mkdir()
  workdir = make_workdir(root / "e2e")
  hf_tiny.switch_model(vocab_size=E2E_VOCAB).save_pretrained(root / "hf")
  from_hf.convert(str(root / "hf"), str(root / "imported"), inputs_length=32,
                  targets_length=8, progress=lambda line: None)
  (root / "in.txt").write_text("\n".join(LINES) + "\n", encoding="utf-8")
  return root, workdir


def _infer(root, workdir, *extra):
  env = dict(os.environ, E2E_DIR=str(workdir), TF_CPP_MIN_LOG_LEVEL="2",
             MTF_SWITCH_CACHE_DIR=str(workdir / "cache"))
  args = [sys.executable, os.path.join(REPO, "tools", "infer.py"), str(root / "imported"),
          "--input", str(root / "in.txt"), "--mixture", "e2e_sst2",
          "--module_import", "tests.e2e.e2e_tasks", "--batch_size", "2", *extra]
  start = time.time()
  result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIME_LIMIT)
  assert result.returncode == 0, result.stderr[-4000:]
  return time.time() - start


@pytest.mark.slow
def test_infer_writes_one_plain_text_line_per_input_and_exits(imported):
  root, workdir = imported
  seconds = _infer(root, workdir, "--output", str(root / "out.txt"))
  lines = (root / "out.txt").read_text(encoding="utf-8").split("\n")
  assert lines[-1] == "" and len(lines[:-1]) == len(LINES), lines
  for line in lines[:-1]:
    assert not line.startswith(("b'", 'b"')), line
  print(f"infer: {seconds:.0f} s (shared machine, under load); outputs {lines[:-1]}")
  # Only the output was added beside the input: no leftover work directory.
  assert sorted(os.listdir(root)) == ["e2e", "hf", "imported", "in.txt", "out.txt"]


@pytest.mark.slow
def test_score_writes_one_log_likelihood_per_input(imported):
  root, workdir = imported
  (root / "targets.txt").write_text("positive\nnegative\npositive\n", encoding="utf-8")
  _infer(root, workdir, "--score_targets", str(root / "targets.txt"),
         "--output", str(root / "scores.txt"))
  scores = [float(x) for x in (root / "scores.txt").read_text().split()]
  assert len(scores) == len(LINES) and all(s < 0 for s in scores), scores


def test_text_lines_are_utf8_text_not_bytes_literals(tmp_path):
  path = tmp_path / "sub" / "out"
  infer.write_text_lines([b"caf\xc3\xa9 ok", "two\nlines", 3.5], str(path))
  assert path.read_text(encoding="utf-8") == "café ok\ntwo lines\n3.5\n"


def test_unset_checkpoint_step_means_the_latest():
  calls = []

  def infer_model(a, b, c, d, e, f, eval_checkpoint_step):
    calls.append(eval_checkpoint_step)

  wrapped = infer._latest_when_unset(infer_model, 6)
  wrapped(*range(6), None)
  wrapped(*range(6), eval_checkpoint_step=None)
  wrapped(*range(6), 300)
  wrapped(*range(6), eval_checkpoint_step=[1, 2])
  assert calls == [-1, -1, 300, [1, 2]]
