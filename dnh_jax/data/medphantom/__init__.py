"""MedPhantom: the procedural renderer of the embedded data set (no download, seeded).

Modules: `renderer` (the public entry points below), `core` (shapes, noise, difficulty),
`tissues` (tissue vocabulary), `paint` (tissue maps), `slices` (CT / MRI / US anatomy),
`modalities` (image formation), `projection` (radiographs), `chest` (chest radiograph
findings), `oct` (retinal OCT), `sheet` (the contact sheet; `python -m
dnh_jax.data.medphantom --sheet sheet.png`). The TFDS builders that store the renders
are in `dnh_jax.data.builders.medphantom`.
"""

from dnh_jax.data.medphantom.renderer import (MAX_SIZE, MIN_SIZE, Difficulty,  # noqa: F401
                                              combinations, is_normal, render,
                                              render_chest_multilabel, sample_chest_findings)

__all__ = ["MAX_SIZE", "MIN_SIZE", "Difficulty", "combinations", "is_normal", "render",
           "render_chest_multilabel", "sample_chest_findings"]
