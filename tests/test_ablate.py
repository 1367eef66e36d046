"""Ablation tool: cells of a sweep, resume of finished cells, tables with the best marked."""

import csv
import io
import json
import os

import pytest

from dnh_jax import ablate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPHASH = os.path.join(ROOT, "configs", "ophash.py")
BASELINE = os.path.join(ROOT, "configs", "baseline.py")


def test_cells_of_grid_variants_and_seeds():
  cells = ablate.make_cells(OPHASH, "bits=16,32;relational=on,off", base="quick")
  assert [c.arg for c in cells] == ["quick,bits=16,relational=on", "quick,bits=16,relational=off",
                                    "quick,bits=32,relational=on", "quick,bits=32,relational=off"]
  assert cells[1].labels == (("bits", "16"), ("relational", "off"))
  assert cells[1].name == "ophash-quick,bits=16,relational=off"

  cells = ablate.make_cells(OPHASH, "bits=16", variants=f"base;semantic=off;{BASELINE}:loss=dch",
                            seeds=(0, 1))
  assert len(cells) == 6
  assert [dict(c.labels)["variant"] for c in cells[::2]] == ["base", "semantic=off",
                                                             "baseline:loss=dch"]
  assert cells[4].config_file == BASELINE and cells[4].arg == "loss=dch,bits=16"
  assert cells[5].seed == 1 and cells[5].name.endswith("-seed=1")


@pytest.mark.parametrize("sweep, message", [("bits", "expected key=value"),
                                             ("bits=16;bits=32", "twice"),
                                             ("bits=", "expected key=value")])
def test_bad_sweeps_raise(sweep, message):
  with pytest.raises(ValueError, match=message):
    ablate.make_cells(OPHASH, sweep)


def test_a_bad_cell_fails_before_anything_runs(tmp_path):
  calls = []
  cells = ablate.make_cells(OPHASH, "bits=16,17", base="quick")
  with pytest.raises(ValueError, match="bits=17.*expected one of"):
    ablate.run_ablation(cells, str(tmp_path), metrics=["test/*"],
                        train_fn=lambda c, w: calls.append(w), log=lambda _: None)
  assert not calls


def _fake_train(scores, calls, fail=()):
  """A stand-in trainer: results.json from a score table, plus a training log."""

  def train(config, workdir):
    calls.append(os.path.basename(workdir))
    key = (config.model.bits, config.loss.weights.get("relational", 0.5) > 0)
    if key in fail:
      raise RuntimeError("diverged")
    os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
    with open(os.path.join(workdir, "logs", "metrics.jsonl"), "w") as f:
      f.write(json.dumps({"step": 10, "train/dist_type1": 9.0}) + "\n")
      f.write(json.dumps({"step": 20, "train/dist_type1": float(config.model.bits) / 8}) + "\n")
    results = {"test/mAP@100": scores[key][0], "test/nDCG@100": scores[key][1],
               "val/mAP@100": 0.0}
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f)
    return results

  return train


def test_two_cell_grid_runs_resumes_and_marks_the_best(tmp_path):
  scores = {(16, True): (0.6, 0.9), (16, False): (0.7, 0.8)}
  cells = ablate.make_cells(OPHASH, "relational=on,off", base="quick,bits=16")
  calls, logs = [], []
  metrics = ["test/*", "train/dist_type1"]
  status = ablate.run_ablation(cells, str(tmp_path), metrics=metrics,
                               lower_is_better=["*dist_type1*"],
                               train_fn=_fake_train(scores, calls, fail={(16, False)}),
                               log=logs.append)
  assert status == {cells[0].name: "ran", cells[1].name: "failed"}
  assert "diverged" in (tmp_path / cells[1].name / "error.txt").read_text()

  # Rerun: the finished cell is not run again, the failed one is retried.
  calls.clear()
  status = ablate.run_ablation(cells, str(tmp_path), metrics=metrics,
                               lower_is_better=["*dist_type1*"],
                               train_fn=_fake_train(scores, calls), log=logs.append)
  assert calls == [cells[1].name]
  assert status == {cells[0].name: "done", cells[1].name: "ran"}
  assert not (tmp_path / cells[1].name / "error.txt").exists()

  md = (tmp_path / "ablation.md").read_text()
  header = [l for l in md.splitlines() if l.startswith("| relational")][0]
  assert header.split(" | ")[1:] == ["test/mAP@100", "test/nDCG@100", "train/dist_type1 |"]
  assert "| on | 0.6000 | **0.9000** | **2.0000** |" in md
  assert "| off | **0.7000** | 0.8000 | 2.0000 |" in md
  rows = list(csv.DictReader(io.StringIO((tmp_path / "ablation.csv").read_text())))
  assert [r["relational"] for r in rows] == ["on", "off"]
  assert float(rows[1]["test/mAP@100"]) == 0.7
  assert rows[0]["best"] == "test/nDCG@100;train/dist_type1"
  assert rows[1]["best"] == "test/mAP@100"


def test_seeds_are_averaged(tmp_path):
  calls = []
  scores = {(16, True): (0.5, 0.5)}

  def train(config, workdir):
    scores[(16, True)] = (0.5 + 0.1 * config.seed, 0.5)
    return _fake_train(scores, calls)(config, workdir)

  cells = ablate.make_cells(OPHASH, "", base="quick,bits=16", seeds=(0, 2))
  ablate.run_ablation(cells, str(tmp_path), metrics=["test/mAP@100"], train_fn=train,
                      log=lambda _: None)
  assert len(calls) == 2
  md = (tmp_path / "ablation.md").read_text()
  assert "0.6000 ± 0.1414" in md
  rows = list(csv.DictReader(io.StringIO((tmp_path / "ablation.csv").read_text())))
  assert rows[0]["test/mAP@100_n"] == "2"


def test_overrides_reach_the_config_and_the_cell_identity(tmp_path):
  seen = []

  def train(config, workdir):
    seen.append((config.eval.relevance, config.train.steps, tuple(config.eval.ks)))
    return _fake_train({(16, True): (0.5, 0.5)}, [])(config, workdir)

  sets = "eval.relevance=organ_disease;train.steps=7;eval.ks=(10, 50)"
  cells = ablate.make_cells(BASELINE, "", base="quick", overrides=sets)
  assert cells[0].name.startswith("baseline-quick-set=")
  other = ablate.make_cells(BASELINE, "", base="quick", overrides="train.steps=8")
  assert other[0].name != cells[0].name
  ablate.run_ablation(cells, str(tmp_path), metrics=["test/*"], log=lambda _: None,
                      train_fn=train)
  assert seen == [("organ_disease", 7, (10, 50))]
  for bad, message in (("train.stepz=3", "no field 'stepz' in train"),
                       ("trian.steps=3", "no field 'trian'"),
                       ("train.steps=many", "train.steps='many'")):
    with pytest.raises(ValueError, match=message):
      ablate.run_ablation(ablate.make_cells(BASELINE, "", overrides=bad), str(tmp_path),
                          metrics=["test/*"], train_fn=train, log=lambda _: None)

