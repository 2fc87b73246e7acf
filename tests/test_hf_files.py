"""mtf_switch.convert.hf_files: the converters' output directory, built aside and moved in."""

import os

import pytest

from mtf_switch.convert.hf_files import check_output_dir, staged_output_dir
from mtf_switch.convert.spec import ConversionError

PREFIX = ".stage-"


def _leftovers(parent):
  return [n for n in os.listdir(parent) if n.startswith(PREFIX)]


def test_output_appears_only_when_the_block_ends(tmp_path):
  output = tmp_path / "out"
  with staged_output_dir(str(output), prefix=PREFIX) as work:
    assert os.path.dirname(work) == str(tmp_path) and os.path.basename(work).startswith(PREFIX)
    (tmp_path / os.path.basename(work) / "weights.bin").write_bytes(b"w")
    assert not output.exists()
  assert sorted(os.listdir(output)) == ["weights.bin"]
  assert not _leftovers(tmp_path)


def test_missing_parent_directories_are_made(tmp_path):
  output = tmp_path / "a" / "b" / "out"
  with staged_output_dir(str(output), prefix=PREFIX) as work:
    open(os.path.join(work, "config.json"), "w").close()
  assert os.listdir(output) == ["config.json"]


def test_an_empty_output_directory_is_replaced(tmp_path):
  output = tmp_path / "out"
  output.mkdir()
  with staged_output_dir(str(output), prefix=PREFIX) as work:
    open(os.path.join(work, "config.json"), "w").close()
  assert os.listdir(output) == ["config.json"]
  assert not _leftovers(tmp_path)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [False, True], ids=["absent", "empty_dir"])
def test_on_an_exception_nothing_is_left_behind(tmp_path, error, existing):
  output = tmp_path / "out"
  if existing:
    output.mkdir()
  with pytest.raises(error):
    with staged_output_dir(str(output), prefix=PREFIX) as work:
      open(os.path.join(work, "half_written.bin"), "w").close()
      raise error("stop")
  assert not _leftovers(tmp_path)
  if existing:
    assert output.is_dir() and not os.listdir(output)
  else:
    assert not output.exists()


def test_check_output_dir(tmp_path):
  check_output_dir(str(tmp_path / "absent"))
  (tmp_path / "empty").mkdir()
  check_output_dir(str(tmp_path / "empty"))
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "keep.txt").write_text("mine")
  (tmp_path / "a_file").write_text("mine")
  for name in ("full", "a_file"):
    with pytest.raises(ConversionError, match="exists and is not empty"):
      check_output_dir(str(tmp_path / name))
  assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
