"""The MLflow pyfunc that serves a ranker version, logged from code (models-from-code).

Request rows (``serving.inputs.RAW_COLUMNS``: ``item_id`` required; ``user_id``, ``query``,
``price``, ``position``, ``category``, ``brand``, ``title`` optional) in, one click
probability per row out. The users' and items' features come from the online store
(``serving.store``) the pipeline fills every night; the version's ``model_config`` names it
(``online_store``; the ``FRESHRANK_ONLINE_STORE`` environment variable overrides it where
the service mounts it elsewhere) and the night the model's features were built after
(``state_as_of``): a store behind that night is refused at load.

Two ways in, the same scores (bit for bit) from the same lookups:

* ``mlflow.pyfunc.load_model(uri).predict(df)`` (and ``mlflow models serve``, which calls
  it): MLflow first enforces the version's signature on ``df`` (it builds a new frame and
  converts the columns), then calls :meth:`RankerModel.predict`. What a service that talks
  to the model over HTTP, or wants MLflow's schema checks, uses; MLflow's wrapper costs
  0.5-1.3 ms per call and cannot be switched off.
* ``mlflow.pyfunc.load_model(uri).unwrap_python_model().score(df)``
  (:meth:`RankerModel.score`): for a search service that scores in its own Python process.
  No MLflow on the request path: ``df`` is checked by ``serving.inputs.request_columns``
  (dtypes only, nothing per row in Python, no new frame: ``item_id`` present and never
  missing, strings where strings are expected, numbers where numbers are), and a
  ``ValueError`` names the column at fault. Returns a float32 numpy array.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import mlflow.pyfunc
from mlflow.models import set_model

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)


class RankerModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from serving.scorer import TFLiteScorer
        from serving.store import STORE_ENV, OnlineStore

        config = context.model_config or {}
        path = os.environ.get(STORE_ENV) or config.get("online_store")
        if not path:
            raise ValueError(f"no online store: set {STORE_ENV} or the model's online_store")
        self.store = OnlineStore(path, min_state_as_of=config.get("state_as_of"))
        self.scorer = TFLiteScorer(context.artifacts["int8_tflite"])
        log.info("serving with the online store %s (after %s)", path, self.store.state_as_of)

    def score(self, raw: pd.DataFrame) -> np.ndarray:
        """One click probability per row of ``raw`` (a pandas DataFrame of request rows), as
        float32: the in-process path, without MLflow's schema enforcement (the module's
        docstring). A ``ValueError`` names a missing ``item_id`` or a column of an unusable
        type."""
        from serving.inputs import model_inputs

        self.store.refresh()  # a newer night may have been loaded since the last request
        inputs, _ = model_inputs(raw, self.store)
        return self.scorer.predict(inputs)

    def predict(self, context, model_input, params=None):
        return self.score(model_input)


set_model(RankerModel())
