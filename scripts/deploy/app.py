"""MONAI Deploy application: chest X-ray DICOM in, MultiCheXNet DICOM SEG, text SR and prediction record out.

    python scripts/deploy/app.py -i DICOM_FOLDER -o OUTPUT_FOLDER -m models/model.ts

Operators: DICOMDataLoader -> DICOMSeriesSelector (CR / DX) -> CheXNetInference -> DICOMSegmentationWriter (the
decision's mask), DICOMTextSRWriter (the record's summary) and FindingsJSONWriter (findings.json: the prediction
record). The bundle's light parts (``bundle.decisions``, ``bundle.detection``, ``bundle.packaging``, the DICOM
grey-level pipeline) are imported from this checkout, which goes first on ``sys.path``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.operators import (
    DICOMDataLoaderOperator,
    DICOMSegmentationWriterOperator,
    DICOMSeriesSelectorOperator,
    DICOMTextSRWriterOperator,
)
from monai.deploy.operators.dicom_seg_writer_operator import SegmentDescription
from monai.deploy.operators.dicom_utils import ModelInfo
from pydicom.sr.codedict import codes

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]  # this folder's operators, the bundle package
from chexnet_operator import CheXNetInferenceOperator  # noqa: E402
from findings_writer import FindingsJSONWriterOperator  # noqa: E402

#: Series selection: projection radiographs (computed or digital radiography).
SELECTION_RULES = json.dumps(
    {"selections": [{"name": "chest radiograph", "conditions": {"Modality": "(?i)(CR|DX)"}}]}
)
#: The segment of each segmentation task of the decision policy: label, SNOMED CT category and type.
SEGMENTS = {
    "lesion": ("lesion", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion),
    "anatomy": ("lung", codes.SCT.AnatomicalStructure, codes.SCT.Lung),
}


class CheXNetApp(Application):
    """Chest X-ray multi-task inference with the MultiCheXNet bundle's exported TorchScript model; the segment
    written is the policy's segmentation task (a lesion, or the lung fields for an anatomy model)."""

    def compose(self) -> None:
        context: AppContext = Application.init_app_context(self.argv)
        output = Path(context.output_path)
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(context.input_path), name="loader")
        selector = DICOMSeriesSelectorOperator(self, rules=SELECTION_RULES, name="selector")
        infer = CheXNetInferenceOperator(self, app_context=context, model_path=Path(context.model_path), name="chexnet")
        version = infer.model_version
        model_info = ModelInfo("MultiCheXNet bundle", "MultiCheXNet", version, "")
        label, category, kind = SEGMENTS[infer.policy.tasks["seg"]]
        segment = SegmentDescription(
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_name="MultiCheXNet",
            algorithm_version=version,
        )
        seg_writer = DICOMSegmentationWriterOperator(
            self, segment_descriptions=[segment], output_folder=output, omit_empty_frames=False, name="seg_writer"
        )
        sr_writer = DICOMTextSRWriterOperator(self, copy_tags=True, model_info=model_info, output_folder=output, name="sr_writer")
        json_writer = FindingsJSONWriterOperator(self, output_folder=output, name="json_writer")

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, infer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(infer, seg_writer, {("seg_image", "seg_image")})
        self.add_flow(selector, seg_writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(infer, sr_writer, {("findings_text", "text")})
        self.add_flow(selector, sr_writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(infer, json_writer, {("findings", "findings")})


if __name__ == "__main__":
    logging.info("MultiCheXNet MONAI Deploy application")
    CheXNetApp().run()
