"""Scores model inputs with the TFLite models: the pipeline's evaluation and serving alike.

The interpreter is LiteRT's (``ai-edge-litert``, which replaces the deprecated
``tf.lite.Interpreter``): measured on our int8 and float models, its scores are bit-identical
to TensorFlow's, at the same latency, and it needs neither TensorFlow (about 2 GB installed)
nor its 5-9 s import, so a serving environment is numpy, pandas, xxhash and LiteRT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from core import features

# Inputs added after the first models were registered: a champion without them still scores
# (the scorer feeds it the inputs it has), and the strategy retrains it (``current``).
OPTIONAL_INPUTS: tuple[str, ...] = tuple(features.ARRAY_WIDTHS)


class TFLiteScorer:
    """Scores model inputs with a TFLite model, batch by batch (one thread by default)."""

    def __init__(self, path: str | Path, num_threads: int = 1):
        self.path = str(path)
        self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        self._by_input = {}
        for detail in self.interpreter.get_input_details():
            # Signature inputs are named like "serving_default_user_bucket:0".
            for col in features.MODEL_INPUTS:
                if detail["name"].endswith(f"_{col}:0") or detail["name"] == col:
                    self._by_input[col] = detail
        missing = set(features.MODEL_INPUTS) - set(self._by_input) - set(OPTIONAL_INPUTS)
        if missing:
            raise ValueError(f"{self.path}: TFLite model lacks inputs {sorted(missing)}")
        self._batch = None

    @property
    def current(self) -> bool:
        """Whether the model takes every input of this version (else it was trained before
        one was added: it still scores, but cannot be warm-started)."""
        return set(self._by_input) == set(features.MODEL_INPUTS)

    def _resize(self, n: int) -> None:
        if self._batch == n:
            return
        for detail in self._by_input.values():
            width = int(detail["shape"][-1])
            self.interpreter.resize_tensor_input(detail["index"], [n, width])
        self.interpreter.allocate_tensors()
        self._batch = n

    def predict(self, inputs: dict[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
        n = len(inputs["dense"])
        out = np.empty(n, dtype=np.float32)
        out_detail = self.interpreter.get_output_details()[0]
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            self._resize(stop - start)
            for col, detail in self._by_input.items():
                self.interpreter.set_tensor(
                    detail["index"], inputs[col][start:stop].astype(detail["dtype"])
                )
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(out_detail["index"]).reshape(-1)
            scale, zero = out_detail["quantization"]
            out[start:stop] = (raw.astype(np.float32) - zero) * scale if scale else raw
        return out
