"""The MedPhantom contact sheet: every combination (or chest finding) in a labelled grid.

    python -m dnh_jax.data.medphantom --sheet /tmp/sheet.png [--combinations all] [--multilabel]
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

import numpy as np

from dnh_jax.data import schema
from dnh_jax.data.medphantom.core import as_difficulty
from dnh_jax.data.medphantom.renderer import (_COMBINATION_SETS, MAX_SIZE, MIN_SIZE,
                                              _check_size, combinations, render,
                                              render_chest_multilabel, sample_chest_findings)
from dnh_jax.utils import atomic_write


def _sheet_blocks(args) -> list[tuple[str, list[np.ndarray], list[str] | None]]:
  k, size, diff = args.per_combination, args.size, args.difficulty
  if args.multilabel:
    blocks = [("no finding", [render_chest_multilabel((), size=size, seed=args.seed + i,
                                                      difficulty=diff) for i in range(k)],
               None)]
    for f in schema.CHEST_FINDINGS:
      blocks.append((f, [render_chest_multilabel((f,), size=size, seed=args.seed + i,
                                                 difficulty=diff) for i in range(k)], None))
    rng = np.random.default_rng(args.seed)
    for row in range(2):
      sets = [sample_chest_findings(rng) for _ in range(k)]
      blocks.append((f"sampled {row + 1}",
                     [render_chest_multilabel(s, size=size, seed=args.seed + 100 + i,
                                              difficulty=diff) for i, s in enumerate(sets)],
                     [",".join(x[:5] for x in s) or "none" for s in sets]))
    return blocks
  return [(f"{m} / {o} / {d}", [render(m, o, d, size=size, seed=args.seed + i,
                                      difficulty=diff) for i in range(k)], None)
          for m, o, d in combinations(args.combinations)]


def write_sheet(path: str, blocks, size: int) -> None:
  """Lays blocks (title, images, captions) out on a grid and writes a PNG atomically."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  scale = max(1, 128 // size)
  cell, pad, title_h = size * scale, 6, 14
  k = max(len(b[1]) for b in blocks)
  cap_h = 12 if any(b[2] for b in blocks) else 0
  bw, bh = k * (cell + 2) + pad, title_h + cell + cap_h + pad
  ncols = max(1, min(len(blocks), int(round(np.sqrt(len(blocks) * bh / bw) * 1.4))))
  nrows = -(-len(blocks) // ncols)
  sheet = Image.new("L", (ncols * bw + pad, nrows * bh + pad), 24)
  draw = ImageDraw.Draw(sheet)
  for b, (title, images, captions) in enumerate(blocks):
    x0, y0 = pad + (b % ncols) * bw, pad + (b // ncols) * bh
    draw.text((x0, y0), title, fill=255)
    for i, img in enumerate(images):
      tile = Image.fromarray(img[..., 0]).resize((cell, cell), Image.NEAREST)
      sheet.paste(tile, (x0 + i * (cell + 2), y0 + title_h))
      if captions:
        draw.text((x0 + i * (cell + 2), y0 + title_h + cell), captions[i][:cell // 6], fill=200)
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise ValueError(f"--sheet={path!r}: directory {directory!r} does not exist")
  atomic_write(path, lambda f: sheet.save(f, format="PNG"))


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m dnh_jax.data.medphantom",
                                   description="Write a labelled MedPhantom contact sheet.")
  parser.add_argument("--sheet", required=True, help="output PNG path")
  parser.add_argument("--size", type=int, default=64, help=f"{MIN_SIZE}..{MAX_SIZE}")
  parser.add_argument("--per-combination", type=int, default=4, help="examples per row")
  parser.add_argument("--multilabel", action="store_true",
                      help="the multi-label chest X-ray collection instead")
  parser.add_argument("--combinations", default="published", choices=_COMBINATION_SETS)
  parser.add_argument("--difficulty", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if not 1 <= args.per_combination <= 32:
    parser.error(f"--per-combination={args.per_combination}: expected 1..32")
  try:
    _check_size(args.size)
    as_difficulty(args.difficulty)
    blocks = _sheet_blocks(args)
    write_sheet(args.sheet, blocks, args.size)
  except ValueError as e:
    parser.error(str(e))
  print(f"wrote {args.sheet} ({sum(len(b[1]) for b in blocks)} images)")
  return 0
