"""Write the prediction record of :class:`CheXNetInferenceOperator` as ``findings.json`` in the output folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec


class FindingsJSONWriterOperator(Operator):
    """Save the ``findings`` input (a JSON-serialisable dict) to ``output_folder/findings.json``, atomically."""

    def __init__(self, fragment: Fragment, *args: Any, output_folder: Path, **kwargs: Any) -> None:
        self.output_folder = Path(output_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("findings")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / "findings.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(op_input.receive("findings"), indent=2))
        tmp.replace(path)
