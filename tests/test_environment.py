"""The environment requirements.txt builds, where a stale one would silently run slower."""

import sys

from google.protobuf.internal import api_implementation

from switch_cli import main as cli_main


def test_protobuf_is_the_compiled_implementation():
  # protobuf 3.20 has no compiled module for Python 3.11; requirements.txt pins 4.25 (upb).
  assert api_implementation.Type() != "python", (
      f"protobuf runs in pure Python on Python {sys.version_info.major}.{sys.version_info.minor}:"
      " reinstall requirements.txt")


def test_the_command_line_warns_about_pure_python_protobuf(monkeypatch, capsys):
  monkeypatch.setattr(api_implementation, "Type", lambda: "python")
  assert cli_main.warn_if_protobuf_is_pure_python()
  assert "pure-Python implementation" in capsys.readouterr().err
  monkeypatch.setattr(api_implementation, "Type", lambda: "upb")
  assert not cli_main.warn_if_protobuf_is_pure_python()
  assert capsys.readouterr().err == ""
