"""TFDS builder of a labelled folder tree `<root>/<modality>/<organ>/<disease>/...`.

Files may sit directly in the disease folder or in sub-folders of it; the first sub-folder
level (e.g. one folder per patient) becomes the example's group, so one patient's images
never straddle the train and test splits. Folder names are matched to the vocabularies of
`dnh_jax.data.schema` case-insensitively, and "normal" stands for the organ's normal class
(e.g. `XR/chest/normal` -> chest_normal). Anything else raises, naming the path and the
valid names. Images may be PNG/JPEG/BMP/TIFF, .npy or DICOM of any size, depth and channel
count (`dnh_jax.data.images`). Hidden files (".*") are ignored; any other file raises.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from dnh_jax.data import images as images_lib
from dnh_jax.data import schema as schema_lib
from dnh_jax.data.builders import base

LAYOUT = "<root>/<modality>/<organ>/<disease>/[<group>/...]<image>"


def _match(name: str, vocabulary, what: str, path: str) -> str:
  for v in vocabulary:
    if v.lower() == name.lower():
      return v
  raise ValueError(f"{path}: unknown {what} folder {name!r}; expected one of "
                   f"{list(vocabulary)} (layout {LAYOUT})")


def _match_disease(name: str, organ: str, path: str) -> str:
  diseases = schema_lib.DISEASES_BY_ORGAN[organ]
  normal = f"{organ}_normal"
  if name.lower() == "normal" and normal in diseases:
    return normal
  try:
    return _match(name, diseases, f"disease (of organ {organ})", path)
  except ValueError:
    if name.lower() in (d.lower() for d in schema_lib.DISEASES):
      raise ValueError(f"{path}: disease {name!r} is not a disease of organ {organ!r}; "
                       f"expected one of {list(diseases)}") from None
    raise


def scan_tree(root: str) -> list[tuple[str, tuple[str, str, str], str]]:
  """Lists the labelled images below `root`.

  Returns:
    Sorted [(path, (modality, organ, disease), group key)].

  Raises:
    ValueError: naming the offending path, for an unknown characteristic name, a file
      outside a disease folder, or an unsupported file type; or naming `root` if it holds
      no images.
  """
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    rel = os.path.relpath(dirpath, root)
    parts = [] if rel == "." else rel.split(os.sep)
    labels = None
    if len(parts) >= 1:
      modality = _match(parts[0], schema_lib.MODALITIES, "modality", dirpath)
    if len(parts) >= 2:
      organ = _match(parts[1], schema_lib.ORGANS, "organ", dirpath)
    if len(parts) >= 3:
      labels = (modality, organ, _match_disease(parts[2], organ, dirpath))
    for name in sorted(filenames):
      if name.startswith("."):
        continue
      path = os.path.join(dirpath, name)
      if labels is None:
        raise ValueError(f"{path}: file outside a disease folder; expected the layout "
                         f"{LAYOUT}")
      if os.path.splitext(name)[1].lower() not in images_lib.IMAGE_EXTENSIONS:
        raise ValueError(f"{path}: unsupported file type; expected one of "
                         f"{list(images_lib.IMAGE_EXTENSIONS)} (remove other files)")
      group = os.path.join(*parts[:4]) if len(parts) >= 4 else path
      found.append((path, labels, group))
  if not found:
    raise ValueError(f"data.manual_dir {root} holds no images; expected the layout {LAYOUT}")
  return sorted(found)


def group_ids(keys) -> np.ndarray:
  """Group keys -> int64 ids (index of the key in sorted order)."""
  index = {k: i for i, k in enumerate(sorted(set(keys)))}
  return np.array([index[k] for k in keys], np.int64)


def load_item(args) -> np.ndarray:
  """(path, size) -> uint8[size, size, 1]; module-level so worker processes can run it."""
  path, size = args
  return images_lib.load_image(path, size)


class ImageFolder(base.DnhBuilder, skip_registration=True):
  """Labelled images from a <modality>/<organ>/<disease> folder tree."""

  name = "dnh_image_folder"

  def schema(self) -> schema_lib.Schema:
    return schema_lib.multi_characteristic_schema()

  def _examples(self) -> Iterator[dict[str, Any]]:
    p = self.params
    entries = scan_tree(p["root"])
    groups = group_ids([g for _, _, g in entries])
    s = self.schema()
    loaded = self.parallel_map(load_item, [(e[0], p["image_size"]) for e in entries])
    for i, ((_, (modality, organ, disease), _), group, image) in enumerate(
        zip(entries, groups, loaded)):
      yield {"image": image, "id": np.int64(i), "group": group,
             **s.encode({"modality": modality, "organ": organ, "disease": disease})}


def from_config(data_cfg, data_dir: str) -> ImageFolder:
  """`config.data` (manual_dir = the tree's root, image_size) -> ImageFolder builder."""
  root = base.check_manual_dir(data_cfg.manual_dir, f"a folder tree {LAYOUT}")
  entries = scan_tree(root)   # validate names now, before anything is built
  params = {"image_size": int(data_cfg.image_size), "root": root,
            "fingerprint": base.files_fingerprint([e[0] for e in entries], root)}
  config = base.make_config(f"s{data_cfg.image_size}_n{len(entries)}", params,
                            base.shared_code_files() + (os.path.abspath(__file__),))
  return ImageFolder(config=config, data_dir=base.builder_data_dir(data_dir),
                     file_format=base.FILE_FORMAT)
