"""Detected boxes as 3D Slicer markups ROIs (``.mrk.json``) in the source image's LPS coordinates.

One ROI markup per box, all in one file (Slicer loads each as its own ROI node). In Slicer's JSON, ``center``
is the LPS centre, ``orientation`` the row-major 3x3 rotation whose columns are the ROI axes in LPS, and
``size`` the edge lengths along those axes; the ROI axes are the image's index axes (x = column, y = row).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bundle.fileio import atomic_write

from .geometry import ImageGeometry

#: The schema identifier Slicer writes (it accepts any ``markups-schema-v1.x.y.json``).
MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)


def roi_markups(boxes: Sequence[dict[str, Any]], geometry: ImageGeometry) -> dict[str, Any]:
    """The markups document of ``boxes`` (each ``{"box": [x1, y1, x2, y2], "score": s, "label": name}``)."""
    markups = []
    for number, box in enumerate(boxes, start=1):
        centre, size, axes = geometry.box_to_lps(box["box"])
        name = f"{box['label']} {number}"
        centre_list = [round(float(c), 4) for c in centre]
        markups.append(
            {
                "type": "ROI",
                "name": name,
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "roiType": "Box",
                "center": centre_list,
                "orientation": [float(a) for a in axes.ravel()],
                "size": [round(float(s), 4) for s in size],
                "controlPoints": [
                    {
                        "id": "1",
                        "label": name,
                        "description": f"score {box['score']:.4f}",
                        "position": centre_list,
                        "positionStatus": "defined",
                    }
                ],
            }
        )
    return {"@schema": MARKUPS_SCHEMA, "markups": markups}


def write_roi_markups(boxes: Sequence[dict[str, Any]], geometry: ImageGeometry, path: Path) -> None:
    """Write :func:`roi_markups` of ``boxes`` to ``path`` (``<stem>_boxes.mrk.json``)."""
    atomic_write(path, json.dumps(roi_markups(boxes, geometry), indent=2).encode())
