"""Entry point of the retrieval application: build, search and export a gallery index.

  python -m dnh_jax.index build --workdir=W --out=FILE (--images=DIR | --split=gallery) [--append]
  python -m dnh_jax.index search --index=FILE --workdir=W --query=PATH [PATH ...]
      --preference=SPEC --k=N [--json=OUT] [--grid=OUT.png] [--html=OUT.html]
  python -m dnh_jax.index export-faiss --index=FILE --out=FILE.faiss

Every failure the user can cause (a corrupt index, another model's index, a bad
preference, an unreadable query, k too large) ends with one line `error: ...` naming the
file or flag, and exit status 2. Index files are written atomically.
"""

from __future__ import annotations

import argparse
import os
import sys

_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, ImportError)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m dnh_jax.index", allow_abbrev=False,
                              description=__doc__.split("\n\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  b = sub.add_parser("build", allow_abbrev=False, help="encode images into an index file")
  b.add_argument("--workdir", required=True, help="workdir of the trained model")
  b.add_argument("--out", required=True, help="index file to write (*.dnhidx)")
  src = b.add_mutually_exclusive_group(required=True)
  src.add_argument("--images", help="folder of images (recursive)")
  src.add_argument("--split", help="a split of the model's own dataset, e.g. gallery")
  b.add_argument("--append", action="store_true", help="add to --out, encoding only new items")
  b.add_argument("--checkpoint", default="best", help="best | last | STEP")
  s = sub.add_parser("search", allow_abbrev=False, help="search an index by image")
  s.add_argument("--index", required=True)
  s.add_argument("--workdir", required=True)
  s.add_argument("--query", required=True, nargs="+", help="query image file(s)")
  s.add_argument("--preference", default="all",
                 help="all | organ | modality=2,organ=1,disease=0 | modality>organ>disease")
  s.add_argument("--k", type=int, default=10)
  s.add_argument("--json", help="write the results as JSON")
  s.add_argument("--grid", help="write a PNG grid: each query and its top k")
  s.add_argument("--html", help="write a self-contained HTML page of the results")
  s.add_argument("--checkpoint", default="best", help="best | last | STEP")
  e = sub.add_parser("export-faiss", allow_abbrev=False,
                     help="write a FAISS IndexBinaryIDMap(IndexBinaryFlat) of the codes")
  e.add_argument("--index", required=True)
  e.add_argument("--out", required=True)
  return p


def _load_index(path: str, flag: str, **expect):
  from dnh_jax.retrieval.index import GalleryIndex  # pylint: disable=g-import-not-at-top
  try:
    return GalleryIndex.load(path, **expect)
  except FileNotFoundError:
    raise FileNotFoundError(f"{flag}={path}: no such file; expected an index written by "
                            "python -m dnh_jax.index build") from None


def build(args) -> None:
  from dnh_jax.retrieval import gallery, retriever  # pylint: disable=g-import-not-at-top
  r = retriever.Retriever.from_workdir(args.workdir, args.checkpoint)
  existing = None
  if args.append and os.path.exists(args.out):
    existing = _load_index(args.out, "--out", expect_num_bits=int(r.config.model.bits))
    if existing.fingerprints.get("model") != r.fingerprints["model"]:
      raise ValueError(f"--append: {args.out} was built by another model than --workdir="
                       f"{args.workdir} (model fingerprint {existing.fingerprints.get('model')}"
                       f", expected {r.fingerprints['model']}); build a new index")
  elif os.path.exists(args.out) and not args.append:
    print(f"replacing {args.out}", file=sys.stderr)
  if args.images:
    index, report = gallery.build_from_folder(r, args.images, existing=existing)
  else:
    index, report = gallery.build_from_split(r, args.split, existing=existing)
  index.save(args.out)
  print(report.summary())
  print(f"wrote {args.out}: {len(index)} items, {index.num_bits}-bit codes, segments "
        f"{list(index.segments)}, model step {r.step}")


def search(args) -> None:
  from dnh_jax.report import retrieval_view  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval import gallery, retriever  # pylint: disable=g-import-not-at-top
  from dnh_jax.retrieval import search as search_lib  # pylint: disable=g-import-not-at-top
  r = retriever.Retriever.from_workdir(args.workdir, args.checkpoint)
  index = _load_index(args.index, "--index", expect_num_bits=int(r.config.model.bits))
  if index.fingerprints.get("model") != r.fingerprints["model"]:
    raise ValueError(f"--index={args.index} was built by another model than --workdir="
                     f"{args.workdir}; rebuild it with python -m dnh_jax.index build")
  try:
    pref = search_lib.index_preference(args.preference, r.schema.names, index.segments)
  except ValueError as e:
    raise ValueError(f"--preference: {e}") from None
  if not 1 <= args.k <= len(index):
    raise ValueError(f"--k={args.k}: expected 1 <= k <= {len(index)} (the items in "
                     f"{args.index})")
  images = []
  for path in args.query:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"--query={path}: no such file")
    try:
      images.append(r.load_images([path])[0])
    except ValueError as e:
      raise ValueError(f"--query={path}: cannot be read as an image ({e})") from None
  codes, predicted = r.encode_with_labels(images)
  results = search_lib.search(index, codes, pref, args.k)
  queries = []
  for i, path in enumerate(args.query):
    labels = gallery.path_labels(path, r.schema)
    source = "folder"
    if labels is None and predicted:
      labels, source = {k: int(v[i]) for k, v in predicted.items()}, "predicted"
    queries.append({"path": os.path.abspath(path), "labels": labels,
                    "labels_source": source if labels else None})
  data = retrieval_view.results_dict(index, results, queries, index_path=args.index,
                                     workdir=r.workdir)
  print(retrieval_view.results_text(data))
  query_images = [im[..., 0] for im in images]
  if args.json:
    retrieval_view.write_json(args.json, data)
    print(f"wrote {args.json}")
  if args.grid:
    retrieval_view.write_grid(args.grid, data, query_images, index)
    print(f"wrote {args.grid}")
  if args.html:
    retrieval_view.write_html(args.html, data, query_images, index)
    print(f"wrote {args.html}")


def export_faiss(args) -> None:
  index = _load_index(args.index, "--index")
  index.to_faiss(args.out)
  print(f"wrote {args.out}: FAISS IndexBinaryIDMap(IndexBinaryFlat({index.codes.shape[1] * 32}"
        f")), {len(index)} items; its search returns the item ids and plain Hamming "
        "distances (preference 'all')")


COMMANDS = {"build": build, "search": search, "export-faiss": export_faiss}


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  import logging  # pylint: disable=g-import-not-at-top
  logging.getLogger("absl").setLevel(logging.ERROR)  # Orbax/TFDS chatter; progress: stderr
  try:
    COMMANDS[args.command](args)
  except _USER_ERRORS as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
