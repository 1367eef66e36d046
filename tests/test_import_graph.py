"""The package's import graph: no cycle, and every layer imports only the layers below it.

Read from the source (every `import`, at module level or inside a function), so the test
needs no import to succeed and sees the lazy imports too. The layers, bottom up:

  helpers (utils, cli, config_lib, parallel)
  data                      labels, similarity rules, held-out pairs, splits
  models | losses | retrieval   (none imports another of the three)
  evaluation
  checkpointing, metric_writing
  train | retrieval application (retrieval.retriever, retrieval.gallery: a trained model
                              from its workdir; never imports the trainer)
  report
  main, ablate, index       (entry points)
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dnh_jax")

LAYER = {
    "utils": 0, "cli": 0, "config_lib": 0, "parallel": 0,
    "data": 1,
    "models": 2, "losses": 2, "retrieval": 2,
    "evaluation": 3,
    "checkpointing": 4, "metric_writing": 4,
    "train": 5, "retrieval_app": 5,
    "report": 6,
    "main": 7, "ablate": 7, "index": 7,
}
# Modules of a folder that sit on another layer than the folder's kernels.
APP_MODULES = {"dnh_jax.retrieval.retriever": "retrieval_app",
               "dnh_jax.retrieval.gallery": "retrieval_app"}


def _modules() -> dict[str, str]:
  out = {}
  for dirpath, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[module.removesuffix(".__init__")] = path
  return out


def import_graph() -> dict[str, set[str]]:
  """{module: the dnh_jax modules it imports} (a `from pkg import name` of a submodule
  counts as importing the submodule)."""
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    targets = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Import):
        targets |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        for alias in node.names:
          sub = f"{node.module}.{alias.name}"
          targets.add(sub if sub in modules else node.module)
    graph[module] = {t for t in targets if t in modules and t != module}
  return graph


def _unit(module: str) -> str:
  """dnh_jax.data.builders.base -> data; dnh_jax.train -> train (APP_MODULES apart)."""
  if module in APP_MODULES:
    return APP_MODULES[module]
  return module.split(".")[1] if "." in module else ""


def _cycles(graph):
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def test_the_graph_is_read():
  graph = import_graph()
  assert "dnh_jax.data.similarity" in graph["dnh_jax.losses.multilabel"]
  assert "dnh_jax.train" in graph["dnh_jax.main"]


def test_no_import_cycle():
  assert _cycles(import_graph()) == []


def test_layers_import_downwards_only():
  graph = import_graph()
  units = {_unit(m) for m in graph} - {""}
  assert units <= set(LAYER), f"give the new unit(s) {units - set(LAYER)} a layer"
  wrong = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                 if _unit(a) and _unit(b) and _unit(a) != _unit(b)
                 and LAYER[_unit(b)] >= LAYER[_unit(a)])
  assert not wrong, wrong


@pytest.mark.parametrize("rule", ["held-out pairs", "similarity rules"])
def test_label_rules_live_once_in_data(rule):
  """The held-out pair parser and the similarity rules have one home, in data/."""
  name = {"held-out pairs": "def parse_pair(", "similarity rules": "def pair_similarity("}[rule]
  homes = [m for m, path in _modules().items() if name in open(path).read()]
  assert len(homes) == 1 and _unit(homes[0]) == "data", homes
