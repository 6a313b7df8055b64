"""Scores model inputs with the TFLite models: the pipeline's evaluation and serving alike.

The interpreter is LiteRT's (``ai-edge-litert``, which replaces the deprecated
``tf.lite.Interpreter``): measured on our int8 and float models, its scores are bit-identical
to TensorFlow's, at the same latency, and it needs neither TensorFlow (about 2 GB installed)
nor its 5-9 s import, so a serving environment is numpy, pandas, xxhash and LiteRT.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from core import features

# Inputs added after the first models were registered: a champion without them still scores
# (the scorer feeds it the inputs it has), and the strategy retrains it (``current``).
OPTIONAL_INPUTS: tuple[str, ...] = tuple(features.ARRAY_WIDTHS)


LARGE = 4096  # rows from which a batch goes to the multi-threaded interpreter


def batch_threads() -> int:
    """Threads for large batches: this machine's cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


class _Interpreter:
    """One LiteRT interpreter and the batch size its tensors are allocated for."""

    def __init__(self, path: str, threads: int):
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.batch = None
        out = self.interpreter.get_output_details()[0]
        self.output, (self.scale, self.zero) = out["index"], out["quantization"]

    def run(self, by_input: dict, inputs: dict, start: int, stop: int) -> np.ndarray:
        it = self.interpreter
        if self.batch != stop - start:
            for detail in by_input.values():
                it.resize_tensor_input(detail["index"], [stop - start, int(detail["shape"][-1])])
            it.allocate_tensors()
            self.batch = stop - start
        for col, detail in by_input.items():
            it.set_tensor(detail["index"], np.asarray(inputs[col][start:stop], detail["dtype"]))
        it.invoke()
        raw = it.get_tensor(self.output).reshape(-1)
        return (raw.astype(np.float32) - self.zero) * self.scale if self.scale else raw


class TFLiteScorer:
    """Scores model inputs with a TFLite model, batch by batch: a request on one thread,
    batches of :data:`LARGE` rows or more on a second interpreter with ``threads`` threads
    (default :func:`batch_threads`). Measured on 2 cores, int8, 200k rows: 744k rows/s on one
    thread, 1.18M on two; the scores are the same (each row is computed alone)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = str(path)
        self.threads = threads or batch_threads()
        self._one = _Interpreter(self.path, 1)
        self._many = None  # made at the first large batch
        self._by_input = {}
        for detail in self._one.interpreter.get_input_details():
            # Signature inputs are named like "serving_default_user_bucket:0".
            for col in features.MODEL_INPUTS:
                if detail["name"].endswith(f"_{col}:0") or detail["name"] == col:
                    self._by_input[col] = detail
        missing = set(features.MODEL_INPUTS) - set(self._by_input) - set(OPTIONAL_INPUTS)
        if missing:
            raise ValueError(f"{self.path}: TFLite model lacks inputs {sorted(missing)}")

    @property
    def current(self) -> bool:
        """Whether the model takes every input of this version (else it was trained before
        one was added: it still scores, but cannot be warm-started)."""
        return set(self._by_input) == set(features.MODEL_INPUTS)

    def predict(self, inputs: dict[str, np.ndarray], batch_size: int = 32768) -> np.ndarray:
        n = len(inputs["dense"])
        runner = self._one
        if n >= LARGE and self.threads > 1:
            if self._many is None:
                self._many = _Interpreter(self.path, self.threads)
            runner = self._many
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            out[start:stop] = runner.run(self._by_input, inputs, start, stop)
        return out
