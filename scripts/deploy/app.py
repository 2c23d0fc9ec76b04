"""MONAI Deploy application: chest X-ray DICOM in, MultiCheXNet DICOM SEG, text SR and findings JSON out.

    python scripts/deploy/app.py -i DICOM_FOLDER -o OUTPUT_FOLDER -m models/model.ts

Operators: DICOMDataLoader -> DICOMSeriesSelector (CR / DX) -> DICOMSeriesToVolume -> CheXNetInference ->
DICOMSegmentationWriter (lesion mask), DICOMTextSRWriter (findings text) and FindingsJSONWriter (findings.json).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from highdicom.sr.coding import CodedConcept
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.operators import (
    DICOMDataLoaderOperator,
    DICOMSegmentationWriterOperator,
    DICOMSeriesSelectorOperator,
    DICOMSeriesToVolumeOperator,
    DICOMTextSRWriterOperator,
)
from monai.deploy.operators.dicom_seg_writer_operator import SegmentDescription
from monai.deploy.operators.dicom_utils import ModelInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chexnet_operator import CheXNetInferenceOperator  # noqa: E402
from findings_writer import FindingsJSONWriterOperator  # noqa: E402

#: Series selection: projection radiographs (computed or digital radiography).
SELECTION_RULES = json.dumps(
    {"selections": [{"name": "chest radiograph", "conditions": {"Modality": "(?i)(CR|DX)"}}]}
)
#: SNOMED CT codes of the segment: a morphologically abnormal structure, a lesion.
LESION_CATEGORY = CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure")
LESION_TYPE = CodedConcept("52988006", "SCT", "Lesion")


class CheXNetApp(Application):
    """Chest X-ray multi-task inference with the MultiCheXNet bundle's exported TorchScript model."""

    def compose(self) -> None:
        context: AppContext = Application.init_app_context(self.argv)
        output = Path(context.output_path)
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(context.input_path), name="loader")
        selector = DICOMSeriesSelectorOperator(self, rules=SELECTION_RULES, name="selector")
        volume = DICOMSeriesToVolumeOperator(self, name="volume")
        infer = CheXNetInferenceOperator(self, app_context=context, model_path=Path(context.model_path), name="chexnet")
        version = str(infer.bundle_metadata["version"])
        model_info = ModelInfo("MultiCheXNet bundle", "MultiCheXNet", version, "")
        segment = SegmentDescription(
            segment_label="lesion",
            segmented_property_category=LESION_CATEGORY,
            segmented_property_type=LESION_TYPE,
            algorithm_name="MultiCheXNet",
            algorithm_version=version,
        )
        seg_writer = DICOMSegmentationWriterOperator(
            self, segment_descriptions=[segment], output_folder=output, omit_empty_frames=False, name="seg_writer"
        )
        sr_writer = DICOMTextSRWriterOperator(self, copy_tags=True, model_info=model_info, output_folder=output, name="sr_writer")
        json_writer = FindingsJSONWriterOperator(self, output_folder=output, name="json_writer")

        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(volume, infer, {("image", "image")})
        self.add_flow(infer, seg_writer, {("seg_image", "seg_image")})
        self.add_flow(selector, seg_writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(infer, sr_writer, {("findings_text", "text")})
        self.add_flow(selector, sr_writer, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(infer, json_writer, {("findings", "findings")})


if __name__ == "__main__":
    logging.info("MultiCheXNet MONAI Deploy application")
    CheXNetApp().run()
