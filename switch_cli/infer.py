"""``infer`` and ``score_*`` modes that read one checkpoint, write plain UTF-8 text and exit.

Mesh-TF's ``utils.run`` reads ``eval_checkpoint_step = None`` (the default) as "every
checkpoint as it appears": ``infer`` decodes the latest one, writes its file, then waits for a
new checkpoint for ever, and ``score_from_strings`` / ``score_from_dataset`` never start
(they unpack that endless iterator into one path). For these modes None here means the
latest checkpoint (``-1`` in Mesh-TF's terms); a step or a list of steps is left as given.

Mesh-TF writes each output line with ``str(line)``; t5's model function already detokenizes
in the graph, so the lines are ``bytes`` and the files held Python literals (``b'...'``). Lines
are written as UTF-8 text instead (bytes decoded, newlines inside a line made spaces, as
Mesh-TF does).

Output names are Mesh-TF's: ``decode_from_file.output_filename`` gets ``-<step>`` appended,
``save_scores.scores_filename`` gets ``.scores`` (and ``.targets``). tools/infer.py wraps
both as one command, text file in, text file out.
"""

import functools

LATEST_CHECKPOINT = -1


def _latest_when_unset(function, step_position: int):
  """``function`` with its ``eval_checkpoint_step`` argument None read as the latest."""

  @functools.wraps(function)
  def wrapped(*args, **kwargs):
    if "eval_checkpoint_step" in kwargs:
      if kwargs["eval_checkpoint_step"] is None:
        kwargs["eval_checkpoint_step"] = LATEST_CHECKPOINT
    elif len(args) > step_position and args[step_position] is None:
      args = args[:step_position] + (LATEST_CHECKPOINT,) + args[step_position + 1:]
    return function(*args, **kwargs)

  wrapped.mtf_switch_latest_when_unset = True
  return wrapped


def text_line(line) -> str:
  """One output line as text: bytes decoded as UTF-8, inner newlines as spaces."""
  if isinstance(line, bytes):
    line = line.decode("utf-8", errors="replace")
  return str(line).replace("\n", " ")


def write_text_lines(lines, filename) -> None:
  """Mesh-TF's ``write_lines_to_file`` (replace the file, one line each), as UTF-8 text."""
  import os

  import tensorflow.compat.v1 as tf
  if tf.io.gfile.exists(filename):
    tf.io.gfile.remove(filename)
  tf.io.gfile.makedirs(os.path.dirname(filename) or ".")
  with tf.io.gfile.GFile(filename, "w") as output_file:
    for line in lines:
      output_file.write(text_line(line) + "\n")


# (utils function, index of eval_checkpoint_step among its positional arguments)
_READ_ONE_CHECKPOINT = (("infer_model", 6), ("score_from_strings", 6),
                        ("score_from_dataset", 5))


def install() -> None:
  """Patches mesh_tensorflow.transformer.utils (its namespace only; idempotent)."""
  from mesh_tensorflow.transformer import utils
  for name, position in _READ_ONE_CHECKPOINT:
    function = getattr(utils, name)
    if not getattr(function, "mtf_switch_latest_when_unset", False):
      setattr(utils, name, _latest_when_unset(function, position))
  utils.write_lines_to_file = write_text_lines
