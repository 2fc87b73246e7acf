"""switch_experiments.run_results: reading back event files, including one cut short."""

import os

import pytest
import tensorflow.compat.v1 as tf

from switch_experiments import run_results


def _write_events(directory, values):
  """An event file with scalar "loss" = value at step i + 1 for each value; returns its path."""
  with tf.Graph().as_default():
    writer = tf.summary.FileWriter(str(directory))
    for step, value in enumerate(values, start=1):
      writer.add_summary(tf.Summary(value=[tf.Summary.Value(tag="loss", simple_value=value)]),
                         step)
    writer.close()
  (name,) = [f for f in os.listdir(directory) if f.startswith("events.out.tfevents")]
  return os.path.join(directory, name)


def test_a_file_cut_in_its_last_record_is_read_up_to_it(tmp_path, capsys):
  path = _write_events(tmp_path, [3.0, 2.5, 2.0])
  assert run_results.read_scalars(str(tmp_path)) == {"loss": {1: 3.0, 2: 2.5, 3: 2.0}}
  with open(path, "rb+") as f:  # what a process killed while writing the last event leaves
    f.truncate(os.path.getsize(path) - 5)
  assert run_results.read_scalars(str(tmp_path)) == {"loss": {1: 3.0, 2: 2.5}}
  assert "ends in a truncated record" in capsys.readouterr().err


def test_damage_other_than_a_cut_end_is_an_error(tmp_path):
  path = _write_events(tmp_path, [3.0, 2.5, 2.0])
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF  # a flipped byte inside a record: its checksum fails
  with open(path, "wb") as f:
    f.write(bytes(data))
  with pytest.raises(tf.errors.DataLossError):
    run_results.read_scalars(str(tmp_path))
