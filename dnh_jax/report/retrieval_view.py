"""Search results for people: a ranked text table, JSON, a PNG grid and an HTML page.

All four show the same thing (`results_dict`): per query, its labels (from its folder
layout, or predicted by the model's classifiers, or unknown) and its top-k items, each
with id, source path, labels, whether each characteristic matches the query's, the
ranking distance sum_c w_c * d_c and the per-sub-code Hamming distances d_c.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from typing import Any, Sequence

import numpy as np

from dnh_jax.data.schema import MULTI
from dnh_jax.utils import atomic_write, atomic_write_bytes, atomic_write_text

MATCH, MISMATCH = "\u2713", "\u2717"   # check mark, ballot x
GREEN, RED, GREY = "#1a7f37", "#cf222e", "#8c959f"


def _label_names(index, labels: dict | None, row: int | None = None) -> dict:
  """{characteristic: name or None (unknown)} of one item (row) or of a query dict."""
  out = {}
  for c in index.schema.characteristics:
    value = labels.get(c.name) if row is None else labels[c.name][row]
    if value is None:
      out[c.name] = None
    elif c.kind == MULTI:
      v = np.asarray(value)
      out[c.name] = None if np.all(v == 255) else "+".join(c.decode(v)) or "none"
    else:
      out[c.name] = None if int(value) < 0 else c.decode(int(value))
  return out


def results_dict(index, results, queries: Sequence[dict], *, index_path: str = "",
                 workdir: str = "") -> dict[str, Any]:
  """JSON-ready results.

  Args:
    index: the searched `GalleryIndex`.
    results: `retrieval.search.SearchResults` of len(queries) queries.
    queries: [{"path", "labels": {name: id} | None, "labels_source"}].
  """
  pref = results.preference
  names = index.schema.names
  out_queries = []
  for qi, q in enumerate(queries):
    q_names = _label_names(index, q.get("labels") or {})
    hits = []
    for rank in range(results.ids.shape[1]):
      pos = int(results.positions[qi, rank])
      labels = _label_names(index, index.labels, pos)
      match = {n: (None if labels[n] is None or q_names[n] is None else labels[n] == q_names[n])
               for n in names}
      hits.append({
          "rank": rank + 1, "id": int(results.ids[qi, rank]), "position": pos,
          "path": str(index.paths[pos]) if index.paths is not None else "",
          "labels": labels, "match": match, "distance": int(results.distances[qi, rank]),
          "subcode_distances": {s: int(d) for s, d in
                                zip(results.segment_names, results.subcode_distances[qi, rank])},
      })
    out_queries.append({"path": q["path"], "labels": q_names,
                        "labels_source": q.get("labels_source"), "results": hits})
  return {
      "index": os.path.abspath(index_path) if index_path else "", "workdir": workdir,
      "index_items": len(index), "num_bits": index.num_bits,
      "preference": {"spec": pref.name,
                     "characteristic_weights": dict(zip(names, pref.characteristic_weights)),
                     "segment_weights": dict(zip(results.segment_names, results.weights))},
      "preferred": list(pref.preferred), "queries": out_queries,
  }


def _cell(name: Any) -> str:
  return "?" if name is None else str(name)


def results_text(data: dict) -> str:
  """Per query, a ranked table (rank, id, labels, distance, per-sub-code distances, path);
  a label differing from the query's is marked with '*'."""
  segs = list(data["preference"]["segment_weights"])
  weights = ", ".join(f"{k}={v}" for k, v in data["preference"]["segment_weights"].items())
  lines = []
  for qi, q in enumerate(data["queries"]):
    names = list(q["labels"])
    src = f" ({q['labels_source']})" if q["labels_source"] else ""
    lines.append(f"query {qi + 1}: {q['path']}")
    lines.append("  labels" + src + ": " + ", ".join(f"{n}={_cell(v)}"
                                                     for n, v in q["labels"].items()))
    lines.append(f"  preference {data['preference']['spec']!r} (segment weights {weights}), "
                 f"{data['index_items']} items")
    cols = ["rank", "id"] + names + ["distance"] + [f"d({s})" for s in segs] + ["path"]
    rows = []
    for h in q["results"]:
      labels = [_cell(h["labels"][n]) + ("*" if h["match"][n] is False else "") for n in names]
      rows.append([str(h["rank"]), str(h["id"])] + labels + [str(h["distance"])]
                  + [str(h["subcode_distances"][s]) for s in segs] + [h["path"]])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = lambda r: "  " + "  ".join(
        v.ljust(w) if i >= len(cols) - 1 or 2 <= i < 2 + len(names) else v.rjust(w)
        for i, (v, w) in enumerate(zip(r, widths))).rstrip()
    lines += [fmt(cols), "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += [fmt(r) for r in rows]
    lines.append("  (* differs from the query's label; ? unknown)")
    lines.append("")
  return "\n".join(lines).rstrip()


def write_json(path: str, data: dict) -> None:
  atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def item_image(index, position: int) -> np.ndarray | None:
  """uint8[S, S] image of an index item: its stored thumbnail, else its file, else None."""
  if index.thumbnails is not None:
    return index.thumbnails[position]
  if index.paths is not None and os.path.isfile(str(index.paths[position])):
    from dnh_jax.data import images as images_lib  # pylint: disable=g-import-not-at-top
    try:
      return images_lib.load_image(str(index.paths[position]), 64)[..., 0]
    except ValueError:
      return None
  return None


def _status(hit: dict, preferred: Sequence[str]) -> str:
  flags = [hit["match"][n] for n in preferred]
  if any(f is None for f in flags):
    return GREY
  return GREEN if all(flags) else RED


def _font(size: int):
  """DejaVu Sans (shipped with matplotlib: has the check and cross marks) at `size` px."""
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf",
                                         "DejaVuSans.ttf"), size)


def write_grid(path: str, data: dict, query_images: Sequence[np.ndarray], index,
               *, title: str = "", thumb: int = 112) -> None:
  """PNG: one row per query, the query then its top k as thumbnails, each labelled with
  its labels (green check: same as the query, red cross: different) and its distances;
  the frame is green when every preferred characteristic matches, red when one does not.
  Drawn with PIL (a matplotlib figure of 40 axes takes seconds)."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  queries = data["queries"]
  k = max(len(q["results"]) for q in queries)
  names = list(queries[0]["labels"])
  font, small = _font(12), _font(11)
  pad, frame, line = 10, 3, 14
  rows = []
  for qi, q in enumerate(queries):
    cells = []
    for hit in [None] + q["results"]:
      if hit is None:
        head, colour, image = "QUERY", "#0969da", query_images[qi]
        text = [(f"{n}: {_cell(q['labels'][n])}", "black") for n in names]
        if q["labels_source"] == "predicted":
          text.append(("(labels predicted)", GREY))
      else:
        head = f"#{hit['rank']}  id {hit['id']}  d={hit['distance']}"
        colour, image = _status(hit, data["preferred"]), item_image(index, hit["position"])
        text = []
        for n in names:
          m = hit["match"][n]
          mark = "" if m is None else (" " + (MATCH if m else MISMATCH))
          text.append((f"{n}: {_cell(hit['labels'][n])}{mark}",
                       GREY if m is None else (GREEN if m else RED)))
        text.append(("d " + " ".join(f"{s[:3]}={v}" for s, v in
                                     hit["subcode_distances"].items()), "black"))
      cells.append((hit, head, colour, image, text))
    rows.append(cells)
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  text_w = max(measure.textlength(t, font=small) for cells in rows for c in cells
               for t, _ in c[4])
  lines = max(len(c[4]) for cells in rows for c in cells)
  head_h, text_h = 18, line * lines + 6
  cell_w = int(max(thumb + 2 * frame, text_w)) + pad
  cell_h = head_h + thumb + 2 * frame + text_h + pad
  top = 44
  width, height = pad + (k + 1) * cell_w, top + len(queries) * cell_h
  canvas = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(canvas)
  pref = data["preference"]
  draw.text((pad, 6), title or (f"preference {pref['spec']!r}: top {k} of "
                                f"{data['index_items']} items"), fill="black", font=_font(14))
  draw.text((pad, 25), "frame green: every preferred characteristic matches the query's; "
            f"{MATCH} same label, {MISMATCH} different; d: ranking distance, then per sub-code",
            fill=GREY, font=small)
  for qi, cells in enumerate(rows):
    y0 = top + qi * cell_h
    for ci, (hit, head, colour, image, text) in enumerate(cells):
      x0 = pad + ci * cell_w
      draw.text((x0, y0), head, fill=colour if hit is None else "black", font=font)
      draw.rectangle((x0, y0 + head_h, x0 + thumb + 2 * frame - 1,
                      y0 + head_h + thumb + 2 * frame - 1), fill=colour)
      pixels = np.zeros((8, 8), np.uint8) if image is None else np.asarray(image, np.uint8)
      canvas.paste(Image.fromarray(pixels).convert("RGB").resize(
          (thumb, thumb), Image.Resampling.NEAREST), (x0 + frame, y0 + head_h + frame))
      ty = y0 + head_h + thumb + 2 * frame + 3
      for li, (t, c) in enumerate(text):
        draw.text((x0, ty + li * line), t, fill=c, font=small)
  buf = io.BytesIO()
  canvas.save(buf, format="PNG", optimize=True)
  atomic_write_bytes(path, buf.getvalue())


def png_data_uri(image: np.ndarray | None, size: int = 96) -> str:
  """A uint8[S, S] image as a data: URI of a PNG scaled to `size` (nearest)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image is None:
    image = np.zeros((8, 8), np.uint8)
  pil = Image.fromarray(np.asarray(image, np.uint8)).resize((size, size),
                                                            Image.Resampling.NEAREST)
  buf = io.BytesIO()
  pil.save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#1f2328}
table{border-collapse:collapse;margin-bottom:2em;font-size:13px}
td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f6f8fa}.ok{color:#1a7f37}.bad{color:#cf222e}.unk{color:#8c959f}
img{image-rendering:pixelated;border:3px solid #8c959f}img.ok{border-color:#1a7f37}
img.bad{border-color:#cf222e}img.q{border-color:#0969da}code{font-size:12px}"""


def results_html_section(data: dict, query_images: Sequence[np.ndarray], index) -> str:
  """The HTML of every query's result table (thumbnails embedded as data: URIs)."""
  names = list(data["queries"][0]["labels"]) if data["queries"] else []
  segs = list(data["preference"]["segment_weights"])
  e = html.escape
  parts = []
  for qi, q in enumerate(data["queries"]):
    src = f" ({e(q['labels_source'])})" if q["labels_source"] else ""
    parts.append(f"<h3>Query {qi + 1}: <code>{e(q['path'])}</code></h3>")
    parts.append(f"<p><img class='q' src='{png_data_uri(query_images[qi])}' alt='query'> "
                 + ", ".join(f"{e(n)}: <b>{e(_cell(v))}</b>" for n, v in q["labels"].items())
                 + src + "</p>")
    head = "".join(f"<th>{e(h)}</th>" for h in
                   ["rank", "image", "id"] + names + ["distance"] + [f"d({s})" for s in segs]
                   + ["path"])
    rows = []
    for h in q["results"]:
      status = {GREEN: "ok", RED: "bad", GREY: "unk"}[_status(h, data["preferred"])]
      cells = [str(h["rank"]),
               f"<img class='{status}' src='{png_data_uri(item_image(index, h['position']), 64)}'"
               " alt='result'>", str(h["id"])]
      for n in names:
        m = h["match"][n]
        cls, mark = ("unk", "") if m is None else (("ok", MATCH) if m else ("bad", MISMATCH))
        cells.append(f"<span class='{cls}'>{e(_cell(h['labels'][n]))} {mark}</span>")
      cells.append(f"<b>{h['distance']}</b>")
      cells += [str(h["subcode_distances"][s]) for s in segs]
      cells.append(f"<code>{e(h['path'])}</code>")
      rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
  return "\n".join(parts)


def write_html(path: str, data: dict, query_images: Sequence[np.ndarray], index) -> None:
  """A self-contained HTML page of the results (no external file referenced)."""
  e = html.escape
  pref = data["preference"]
  weights = ", ".join(f"{k}={v}" for k, v in pref["segment_weights"].items())
  page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>dnh_jax search</title>"
          f"<style>{STYLE}</style></head><body><h1>Search results</h1>"
          f"<p>Index <code>{e(data['index'])}</code> ({data['index_items']} items, "
          f"{data['num_bits']}-bit codes), model <code>{e(data['workdir'])}</code>.<br>"
          f"Preference <b>{e(pref['spec'])}</b>: distance = sum of segment weights x sub-code "
          f"distances ({e(weights)}). {MATCH} same label as the query, {MISMATCH} different; "
          "green frame: every preferred characteristic matches.</p>"
          + results_html_section(data, query_images, index) + "</body></html>\n")
  atomic_write(path, lambda f: f.write(page.encode("utf-8")))
