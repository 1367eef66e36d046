"""The run report: `<workdir>/report.html` and its PNG figures, from a trained workdir.

    python -m dnh_jax.report --workdir=W         (also written at the end of every run)

The model is loaded with `Retriever.from_workdir` (the best checkpoint, as the test
results use), the test query and gallery splits are encoded, and per preference of
`config.eval.preferences` ("all" for a flat code) the report draws

* pr_radius.png / pr_rank.png - precision-recall curves, by ranking-distance radius and by
  rank (mean over the queries with at least one relevant item);
* metrics_at_k.png - mAP@k and nDCG@k against k (index ties, the trainer's conventions);
* distances.png - the whole-code Hamming distance histograms of relevant vs irrelevant
  pairs, and of the graded pair types when the schema has organ and disease (type 1 same
  organ and disease < type 2 same organ only < type 3 other organ: objective 1's
  separation);
* grid_<preference>.png - the top 8 of four fixed test queries (the first of each of the
  first four label combinations in the query split);
* held_out.png - with held-out combinations (`data.held_out`), held-out vs seen queries
  side by side.

Every figure is a file next to report.html; the page references only those.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import time
from typing import Any

import numpy as np
from absl import logging

from dnh_jax.evaluation import groups as groups_lib
from dnh_jax.evaluation import metrics as metrics_lib
from dnh_jax.evaluation import relevance as relevance_lib
from dnh_jax.report import retrieval_view, tables
from dnh_jax.retrieval import search as search_lib
from dnh_jax.retrieval.codes import pack_codes
from dnh_jax.retrieval.hamming import hamming_distances
from dnh_jax.retrieval.index import GalleryIndex
from dnh_jax.utils import atomic_write_bytes, atomic_write_text

GRID_QUERIES, GRID_K = 4, 8


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  _plt().close(fig)
  atomic_write_bytes(path, buf.getvalue())
  return os.path.basename(path)


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "pref"


def ks_for(n: int) -> list[int]:
  return [k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if k <= n] or [n]


def preference_curves(d: np.ndarray, rel: np.ndarray, gains: np.ndarray,
                      ks: list[int]) -> dict[str, Any]:
  """PR by radius and by rank, mAP@k and nDCG@k of one preference.

  Args:
    d: int[Q, N] ranking distances; rel: bool[Q, N]; gains: int[Q, N].
  """
  has = rel.any(axis=1)
  order = metrics_lib.rank_order(d, None, "index")
  rel_sorted = np.take_along_axis(rel, order, 1)
  gain_sorted = np.take_along_axis(gains, order, 1)
  precision_r, recall_r = metrics_lib.pr_curve(d, rel)
  hits = np.cumsum(rel_sorted, axis=1)
  n = np.arange(1, d.shape[1] + 1)
  prec_rank = (hits / n)[has].mean(0) if has.any() else np.zeros(d.shape[1])
  rec_rank = (hits / np.maximum(rel.sum(1, keepdims=True), 1))[has].mean(0) \
      if has.any() else np.zeros(d.shape[1])
  ideal = -np.sort(-gains, axis=1)
  maps, ndcgs = [], []
  for k in ks:
    maps.append(float(metrics_lib.ranked_ap(rel_sorted, k).mean()))
    ideal_k = metrics_lib.ranked_dcg(ideal, k)
    dcg = metrics_lib.ranked_dcg(gain_sorted, k)
    ndcgs.append(float(np.nanmean(np.where(ideal_k > 0, dcg / np.where(ideal_k > 0, ideal_k, 1),
                                           np.nan))) if (ideal_k > 0).any() else float("nan"))
  return {"pr_radius": (precision_r[has].mean(0) if has.any() else precision_r[0],
                        recall_r[has].mean(0) if has.any() else recall_r[0]),
          "pr_rank": (prec_rank, rec_rank), "mAP": maps, "nDCG": ndcgs}


def _fixed_queries(labels: dict[str, np.ndarray], count: int) -> list[int]:
  """The first query of each of the first `count` values of the first two characteristics
  (e.g. (modality, organ) pairs): fixed, and as varied as the split allows."""
  seen, picks = set(), []
  n = len(next(iter(labels.values())))
  for i in range(n):
    key = tuple(tuple(np.asarray(v[i]).reshape(-1).tolist()) for v in list(labels.values())[:2])
    if key not in seen:
      seen.add(key)
      picks.append(i)
    if len(picks) == count:
      break
  return picks


def build_report(workdir: str, *, splits=None, checkpoint: str | int = "best",
                 log=print) -> str:
  """Writes `<workdir>/report.html` and its figures; returns the page's path."""
  from dnh_jax.retrieval.retriever import Retriever  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  r = Retriever.from_workdir(workdir, checkpoint)
  config, schema = r.config, r.schema
  if splits is None:
    from dnh_jax import data as data_lib  # pylint: disable=g-import-not-at-top
    splits = data_lib.load_splits(config.data, seed=config.seed,
                                  data_dir=data_lib.default_data_dir(config.data))
  q, g = splits.data["query"], splits.data["gallery"]
  q_packed, g_packed = pack_codes(r.encode(q.images)), pack_codes(r.encode(g.images))
  specs = list(config.eval.preferences) if r.segments else []
  specs = ["all"] + [s for s in specs if s != "all"]
  out_dir = os.path.abspath(workdir)
  ks = ks_for(len(g))
  plt = _plt()
  curves, prefs = {}, {}
  held = None
  if tuple(config.data.held_out) and "modality" in schema and "organ" in schema:
    held = groups_lib.held_out_groups(q.labels, schema, config.data)["held_out"]
  group_curves = {}
  for spec in specs:
    pref = search_lib.index_preference(spec, schema.names, r.segments)
    prefs[spec] = pref
    seg = r.segments or None
    d = hamming_distances(q_packed, g_packed, segments=seg,
                          weights=pref.segment_weights if seg else None)
    rule = (relevance_lib.get_relevance(config.eval.relevance, schema) if spec == "all"
            else relevance_lib.PreferenceRelevance(pref))
    rel, gains = rule(schema, q.labels, g.labels)
    rel, gains = np.asarray(rel, bool), np.asarray(gains, np.int64)
    curves[spec] = preference_curves(d, rel, gains, ks)
    if held is not None and held.any() and (~held).any():
      group_curves[spec] = {name: preference_curves(d[m], rel[m], gains[m], ks)
                            for name, m in (("held-out", held), ("seen", ~held))}
  figures = []

  def pr_figure(key, title, marker):
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for spec, c in curves.items():
      p, rc = c[key]
      ax.plot(rc, p, marker=marker, label=spec)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, os.path.join(out_dir, f"{key}.png"))

  figures.append((pr_figure("pr_radius", "Precision-recall by ranking-distance radius "
                            "(0, 1, 2, ...)", "."),
                  "Precision vs recall of the items within ranking distance r of the query, "
                  "r = 0, 1, 2, ... (one point per radius; for a weighted preference r is "
                  "the weighted distance). Mean over queries with a relevant item."))
  figures.append((pr_figure("pr_rank", "Precision-recall by rank (top 1, 2, ..., N)", None),
                  "Precision vs recall of the top n items, n = 1 ... gallery size (ties by "
                  "gallery index)."))
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for spec, c in curves.items():
    axes[0].plot(ks, c["mAP"], marker="o", label=spec)
    axes[1].plot(ks, c["nDCG"], marker="o", label=spec)
  for ax, name in zip(axes, ("mAP@k", "nDCG@k")):
    ax.set(xscale="log", xlabel="k", ylabel=name, ylim=(0, 1.02), title=name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  figures.append((_save(fig, os.path.join(out_dir, "metrics_at_k.png")),
                  "mAP@k (relevant: every preferred characteristic matches; 'all' uses "
                  f"eval.relevance={config.eval.relevance!r}) and nDCG@k (gain: weight of the "
                  "matched characteristics) against k, on the test split."))

  d_all = hamming_distances(q_packed, g_packed)
  rel_all, _ = relevance_lib.AllMatch()(schema, q.labels, g.labels)
  rel_all = np.asarray(rel_all, bool)
  bins = np.arange(int(config.model.bits) + 2) - 0.5
  panels = [("relevant (every characteristic matches)", d_all[rel_all]),
            ("irrelevant", d_all[~rel_all])]
  graded = []
  if "organ" in schema and "disease" in schema:
    organ = np.asarray(relevance_lib.match(schema, "organ", q.labels, g.labels))
    disease = np.asarray(relevance_lib.match(schema, "disease", q.labels, g.labels))
    graded = [("type 1: same organ and disease", d_all[organ & disease]),
              ("type 2: same organ, other disease", d_all[organ & ~disease]),
              ("type 3: other organ", d_all[~organ])]
  fig, axes = plt.subplots(1, 2 if graded else 1, figsize=(11 if graded else 6, 4),
                           squeeze=False)
  summary = []
  for ax, group in zip(axes[0], [panels] + ([graded] if graded else [])):
    for name, values in group:
      if values.size:
        ax.hist(values, bins=bins, density=True, alpha=0.5, label=f"{name} (mean {values.mean():.1f})")
        summary.append(f"{name}: mean {values.mean():.2f}, {values.size} pairs")
    ax.set(xlabel="Hamming distance (whole code)", ylabel="fraction of pairs")
    ax.legend(fontsize=7)
  fig.tight_layout()
  figures.append((_save(fig, os.path.join(out_dir, "distances.png")),
                  "Whole-code Hamming distances of query-gallery pairs: relevant vs "
                  "irrelevant" + (", and the graded pair types of objective 1 (a good code "
                                  "separates type 1 < type 2 < type 3)" if graded else "")
                  + ". " + "; ".join(summary) + "."))

  picks = _fixed_queries(q.labels, GRID_QUERIES)
  gallery_index = GalleryIndex(codes=g_packed, ids=g.ids, labels=g.labels,
                               num_bits=int(config.model.bits), segments=r.segments,
                               schema=schema, thumbnails=g.images[..., 0],
                               paths=np.array([f"{config.data.name}:gallery/{i}" for i in g.ids]))
  for spec in specs:
    res = search_lib.search(gallery_index, q_packed[picks], prefs[spec], min(GRID_K, len(g)))
    queries = [{"path": f"{config.data.name}:query/{int(q.ids[i])}",
                "labels": {k: v[i] for k, v in q.labels.items()}, "labels_source": "dataset"}
               for i in picks]
    data = retrieval_view.results_dict(gallery_index, res, queries, workdir=r.workdir)
    name = f"grid_{_slug(spec)}.png"
    retrieval_view.write_grid(os.path.join(out_dir, name), data,
                              [q.images[i, ..., 0] for i in picks], gallery_index)
    figures.append((name, f"Preference {spec!r}: four fixed test queries and their top "
                          f"{GRID_K} in the test gallery; labels marked \u2713 same as the "
                          "query / \u2717 different, with the per-sub-code distances."))

  if group_curves:
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, sharey=True)
    for row, metric in enumerate(("mAP", "nDCG")):
      for col, group in enumerate(("held-out", "seen")):
        ax = axes[row, col]
        for spec, gc in group_curves.items():
          ax.plot(ks, gc[group][metric], marker="o", label=spec)
        ax.set(xscale="log", ylim=(0, 1.02), title=f"{metric}@k, {group} queries")
        ax.grid(alpha=0.3)
        if col == 0:
          ax.set_ylabel(f"{metric}@k")
        if row == 1:
          ax.set_xlabel("k")
    axes[0, 1].legend(fontsize=8)
    fig.tight_layout()
    figures.append((_save(fig, os.path.join(out_dir, "held_out.png")),
                    f"Queries of the held-out combinations {list(config.data.held_out)} "
                    f"({int(held.sum())} queries, left) vs the seen ones ({int((~held).sum())},"
                    " right), per preference."))

  results_path = os.path.join(out_dir, "results.json")
  results = json.load(open(results_path)) if os.path.isfile(results_path) else {}
  e = html.escape
  body = [f"<h1>Run report: {e(os.path.basename(out_dir))}</h1>",
          f"<p>Workdir <code>{e(out_dir)}</code>; model {e(config.model.head)} / "
          f"{e(config.model.backbone)}, {int(config.model.bits)} bits, segments "
          f"{list(r.segments) or 'flat'}; checkpoint step {r.step} ({e(str(checkpoint))}); "
          f"test split: {len(q)} queries, {len(g)} gallery items; preferences "
          f"{', '.join(map(e, specs))}.</p>"]
  if results:
    body.append("<h2>results.json</h2><pre>" + e(tables.results_table(results)) + "</pre>")
  for name, caption in figures:
    body.append(f"<figure><img src='{e(name)}' alt='{e(name)}'><figcaption>{e(caption)}"
                "</figcaption></figure>")
  page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>dnh_jax run report</title>"
          "<style>body{font-family:sans-serif;margin:1.5em;max-width:1200px}img{max-width:100%;"
          "border:1px solid #d0d7de}figure{margin:1.5em 0}figcaption{font-size:14px;"
          "color:#57606a}pre{font-size:12px;background:#f6f8fa;padding:8px;overflow-x:auto}"
          "</style></head><body>" + "\n".join(body) + "</body></html>\n")
  numbers = {"ks": ks, "step": r.step, "figures": [f for f, _ in figures],
             "preferences": {spec: {"mAP": c["mAP"], "nDCG": c["nDCG"]}
                             for spec, c in curves.items()},
             "groups": {spec: {grp: {"mAP": c["mAP"], "nDCG": c["nDCG"]} for grp, c in gc.items()}
                        for spec, gc in group_curves.items()}}
  atomic_write_text(os.path.join(out_dir, "report.json"), json.dumps(numbers, indent=1) + "\n")
  path = os.path.join(out_dir, "report.html")
  atomic_write_text(path, page)
  log(f"Report written to {path} ({len(figures)} figures, {time.time() - t0:.1f} s)")
  return path


def write_after_run(config, workdir: str, splits=None) -> None:
  """The end-of-run hook (process 0): the report, unless `config.report.html` is False.
  A failure only logs a warning: the run's results are already written."""
  import jax  # pylint: disable=g-import-not-at-top
  if not config.report.get("html", True) or jax.process_index() != 0:
    return
  if jax.process_count() > 1:  # Orbax restores with every process; run it afterwards
    logging.warning("Multi-process run: write the report with python -m dnh_jax.report "
                    "--workdir=%s", workdir)
    return
  try:
    build_report(workdir, splits=splits)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("Run report failed (the run's results are unaffected): %s: %s",
                    type(e).__name__, e)
    print(f"warning: run report failed: {type(e).__name__}: {e}", flush=True)
