"""Tissues of the MedPhantom templates and their physical properties per modality.

An organ template is a map of tissue ids; a modality turns it into an image through the
property that its physics sees. That is what lets any organ be rendered in any modality and
makes each disease sign adapt: a fibroadenoma is hypoechoic with posterior enhancement in
ultrasound (low attenuation), a carcinoma casts an acoustic shadow (high attenuation), a
glioma rim enhances on post-contrast T1 MRI, a liver metastasis is hypodense on CT.

Columns (values are textbook orders of magnitude, tuned by eye):
  ct     Hounsfield units (contrast-enhanced blood, as in routine chest/abdomen CT).
  mri    T1-weighted post-contrast signal, 0..1 (fat bright, fluid dark, enhancing bright).
  echo   ultrasound backscatter (speckle brightness), 0..1.
  uatt   ultrasound attenuation per view depth (soft tissue ~1.5; bone / gas shadow).
  z      acoustic impedance (specular reflections at interfaces; gas ~0, bone high).
  oct    OCT reflectivity, 0..1.
  oatt   OCT attenuation per view depth (blood vessels shadow).
  xr     X-ray attenuation relative to water.
  tex    heterogeneity of the tissue (relative modulation by smooth noise).
"""

from __future__ import annotations

import numpy as np

_COLUMNS = ("ct", "mri", "echo", "uatt", "z", "oct", "oatt", "xr", "tex")

# name: (ct, mri, echo, uatt, z, oct, oatt, xr, tex)
_TABLE = {
    # Anatomy.
    "air": (-1000, 0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.0, 0.0),   # US: coupling gel
    "gas": (-1000, 0.0, 0.9, 80.0, 0.05, 0.02, 0.2, 0.0, 0.0),
    "lung": (-860, 0.03, 0.7, 80.0, 0.15, 0.3, 2.0, 0.25, 0.15),
    "fat": (-100, 0.88, 0.22, 0.8, 1.38, 0.2, 0.8, 0.9, 0.12),
    "soft": (45, 0.33, 0.42, 1.5, 1.65, 0.5, 2.0, 1.0, 0.1),
    "skin": (35, 0.42, 0.85, 1.5, 1.75, 0.85, 3.0, 1.0, 0.05),
    "fluid": (5, 0.08, 0.01, 0.1, 1.5, 0.002, 0.1, 1.0, 0.0),
    "blood": (160, 0.06, 0.03, 0.3, 1.6, 0.15, 8.0, 1.05, 0.0),
    "bone": (1100, 0.04, 1.0, 120.0, 7.0, 0.7, 4.0, 3.2, 0.05),
    "marrow": (280, 0.72, 0.6, 8.0, 4.0, 0.6, 3.0, 1.8, 0.2),
    "gm": (38, 0.42, 0.32, 1.2, 1.6, 0.45, 1.5, 1.04, 0.04),
    "wm": (28, 0.6, 0.45, 1.3, 1.62, 0.85, 4.0, 1.04, 0.03),
    "gland": (38, 0.32, 0.72, 1.8, 1.7, 0.6, 2.0, 1.02, 0.3),
    "liver": (95, 0.5, 0.52, 1.5, 1.65, 0.5, 2.0, 1.05, 0.12),
    "organ": (120, 0.55, 0.45, 1.4, 1.64, 0.5, 2.0, 1.05, 0.1),
    "lens": (95, 0.45, 0.02, 0.3, 1.72, 0.08, 0.3, 1.05, 0.0),
    "retina": (50, 0.5, 0.9, 2.0, 1.8, 0.6, 2.0, 1.05, 0.05),
    # Retinal layers (OCT B-scan); other modalities see generic soft tissue.
    "nfl": (40, 0.45, 0.7, 1.5, 1.7, 0.9, 1.5, 1.0, 0.1),
    "gcl": (40, 0.42, 0.5, 1.5, 1.65, 0.38, 1.0, 1.0, 0.1),
    "ipl": (40, 0.44, 0.55, 1.5, 1.66, 0.62, 1.0, 1.0, 0.1),
    "inl": (40, 0.4, 0.4, 1.5, 1.64, 0.16, 0.8, 1.0, 0.1),
    "opl": (40, 0.44, 0.55, 1.5, 1.66, 0.58, 1.0, 1.0, 0.1),
    "onl": (40, 0.4, 0.35, 1.5, 1.63, 0.08, 0.6, 1.0, 0.08),
    "ez": (45, 0.45, 0.7, 1.5, 1.7, 0.75, 1.5, 1.0, 0.05),
    "rpe": (55, 0.5, 0.95, 2.5, 1.8, 1.0, 10.0, 1.05, 0.05),
    "choroid": (60, 0.55, 0.6, 2.0, 1.7, 0.45, 6.0, 1.05, 0.35),
    "sclera": (60, 0.35, 0.8, 2.0, 1.75, 0.3, 6.0, 1.05, 0.1),
    # Disease tissues.
    "glioma": (34, 0.85, 0.62, 1.6, 1.66, 0.35, 1.2, 1.08, 0.3),
    "necrosis": (14, 0.14, 0.1, 0.4, 1.56, 0.08, 0.4, 1.0, 0.2),
    "edema": (18, 0.36, 0.28, 1.0, 1.58, 0.3, 0.8, 1.02, 0.1),
    "meningioma": (62, 0.82, 0.55, 2.0, 1.72, 0.75, 3.0, 1.2, 0.06),
    "adenoma": (48, 0.7, 0.5, 1.4, 1.66, 0.55, 1.8, 1.1, 0.1),
    "benign": (75, 0.7, 0.12, 0.3, 1.6, 0.3, 0.8, 1.08, 0.05),
    "malignant": (62, 0.68, 0.08, 9.0, 1.8, 0.78, 5.0, 1.15, 0.35),
    "calc": (700, 0.05, 1.0, 60.0, 5.0, 0.95, 4.0, 3.5, 0.0),
    "ggo": (-420, 0.14, 0.5, 10.0, 0.9, 0.55, 2.0, 0.55, 0.3),
    "consolidation": (38, 0.38, 0.48, 1.3, 1.62, 0.6, 2.0, 0.98, 0.12),
    "drusen": (250, 0.45, 0.9, 20.0, 2.2, 0.42, 1.5, 1.3, 0.15),
    "cnv": (60, 0.72, 0.75, 2.0, 1.8, 0.92, 3.0, 1.1, 0.3),
    "dme": (38, 0.32, 0.5, 1.2, 1.6, 0.35, 0.8, 1.0, 0.1),
    "liver_lesion": (42, 0.28, 0.22, 1.2, 1.6, 0.28, 1.0, 1.08, 0.3),
}

NAMES = tuple(_TABLE)
ID = {name: i for i, name in enumerate(NAMES)}
assert len(NAMES) < 64  # labels are int8 and `core._allowed` has 64 slots

PROPS = {col: np.array([_TABLE[n][j] for n in NAMES], np.float32)
         for j, col in enumerate(_COLUMNS)}

# Short names used by the templates.
AIR, GAS, LUNG, FAT, SOFT, SKIN, FLUID, BLOOD, BONE, MARROW = (
    ID[n] for n in ("air", "gas", "lung", "fat", "soft", "skin", "fluid", "blood", "bone",
                    "marrow"))
GM, WM, GLAND, LIVER, ORGAN, LENS, RETINA = (
    ID[n] for n in ("gm", "wm", "gland", "liver", "organ", "lens", "retina"))
NFL, GCL, IPL, INL, OPL, ONL, EZ, RPE, CHOROID, SCLERA = (
    ID[n] for n in ("nfl", "gcl", "ipl", "inl", "opl", "onl", "ez", "rpe", "choroid",
                    "sclera"))
GLIOMA, NECROSIS, EDEMA, MENINGIOMA, ADENOMA, BENIGN, MALIGNANT, CALC = (
    ID[n] for n in ("glioma", "necrosis", "edema", "meningioma", "adenoma", "benign",
                    "malignant", "calc"))
GGO, CONSOLIDATION, DRUSEN, CNV, DME, LIVER_LESION = (
    ID[n] for n in ("ggo", "consolidation", "drusen", "cnv", "dme", "liver_lesion"))

# Tissues a lesion may grow into (everything but bone, air and gas).
SOFT_TISSUES = tuple(i for n, i in ID.items() if n not in ("air", "gas", "bone", "lens"))
