"""The MLflow pyfunc flavour that serves the int8 TFLite ranker.

``mlflow.pyfunc.load_model("models:/ranker@champion").predict(df)`` scores a DataFrame of
candidate rows. Rows may be raw (``user_id, item_id, category, brand, query, price`` and
optionally ``position``; ids are hashed exactly as in training by ``core.features``) or
already hashed (the ``*_bucket`` columns plus the dense features). State features
(``core.features.STATE_FEATURES``) and arrays (``ARRAY_WIDTHS``: history, words) absent from
the rows get a new id's values. Returns one click probability per row. The same model is
what ``mlflow models serve`` answers with.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np


def frame_to_inputs(df) -> dict[str, np.ndarray]:
    """Model inputs from raw or hashed candidate rows."""
    import pandas as pd

    from core import features
    from models.ranker import to_inputs

    if not set(features.ID_COLUMNS) <= set(df.columns):
        raw = df.astype(object).where(pd.notna(df), None).to_dict("records")
        df = pd.DataFrame([features.feature_row(r) for r in raw])
    missing = [c for c in features.DENSE_FEATURES if c not in df.columns]
    if missing:
        df = df.assign(**{c: features.STATE_DEFAULTS.get(c, 0.0) for c in missing})
    for col, empty in features.EMPTY_ARRAYS.items():
        if col not in df.columns:
            df = df.assign(**{col: [empty] * len(df)})
    return to_inputs(df)


class RankerPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from models.ranker import TFLiteScorer

        self.scorer = TFLiteScorer(context.artifacts["int8_tflite"])

    def predict(self, context, model_input, params=None):
        return self.scorer.predict(frame_to_inputs(model_input))
