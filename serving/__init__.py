"""Serving: the online store, request rows to model inputs, the TFLite scorer and the
MLflow pyfunc. Depends on ``core`` only (no TensorFlow, no Spark)."""
