"""The MLflow pyfunc that serves a ranker version, logged from code (models-from-code).

``mlflow.pyfunc.load_model("models:/ranker@champion").predict(df)`` (or ``mlflow models
serve``) scores request rows (``serving.inputs.RAW_COLUMNS``: ``item_id`` required;
``user_id``, ``query``, ``price``, ``position``, ``category``, ``brand``, ``title``
optional) and returns one click probability per row. The users' and items' features come
from the online store (``serving.store``) the pipeline fills every night; the version's
``model_config`` names it (``online_store``; the ``FRESHRANK_ONLINE_STORE`` environment
variable overrides it where the service mounts it elsewhere) and the night the model's
features were built after (``state_as_of``): a store behind that night is refused at load.
"""

from __future__ import annotations

import logging
import os

import mlflow.pyfunc
from mlflow.models import set_model

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

    def predict(self, context, model_input, params=None):
        from serving.inputs import model_inputs

        self.store.refresh()  # a newer night may have been loaded since the last request
        inputs, _ = model_inputs(model_input, self.store)
        return self.scorer.predict(inputs)


set_model(RankerModel())
