"""Label vocabularies shared by readers, datasets and reports."""

from __future__ import annotations

#: NIH ChestX-ray14 findings, in the order of the official label file (Wang et al., CVPR 2017).
NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)

#: Value marking an unknown label in a datalist's ``cls`` vector (a dataset that does not grade that finding).
UNKNOWN_LABEL: int = -1
