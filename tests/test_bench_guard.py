"""Every benchmark runs under bench/load_guard.py: it refuses a loaded machine."""

import argparse
import glob
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench")
sys.path.insert(0, BENCH)
import load_guard  # pylint: disable=g-import-not-at-top,wrong-import-position


def _args(allow):
  parser = argparse.ArgumentParser()
  load_guard.add_flag(parser)
  return parser.parse_args(["--allow-load"] if allow else [])


def test_guard_refuses_or_marks_a_loaded_machine(monkeypatch, capsys):
  monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 3.0, 2.0))
  with pytest.raises(SystemExit) as e:
    load_guard.start(_args(allow=False))
  assert e.value.code == 1
  assert "refusing to run: 1-minute load 4.00 > 1.5" in capsys.readouterr().out
  guard = load_guard.start(_args(allow=True))
  assert guard.mark == "  [UNDER LOAD]"
  assert not guard.finish()
  monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.4, 0.5))
  quiet = load_guard.start(_args(allow=False))
  assert quiet.mark == "" and quiet.finish()
  out = capsys.readouterr().out
  assert "load average before: 0.30 0.40 0.50" in out and "load average after" in out


def test_every_benchmark_uses_the_guard():
  scripts = [p for p in glob.glob(os.path.join(BENCH, "*.py"))
             if os.path.basename(p) != "load_guard.py"]
  assert len(scripts) >= 7
  for path in scripts:
    text = open(path).read()
    assert "load_guard.add_flag(" in text and "load_guard.start(" in text, path
