"""One place that builds the SparkSession every Spark stage uses.

The master comes from settings (``[preprocess] spark_master``, default ``local[2]``), so the
same job runs on a laptop or, via spark-submit, against a cluster (then the master given by
spark-submit wins and this only names the app).
"""

from __future__ import annotations

import os

from jobs.settings import PreprocessSettings


def get_spark(cfg: PreprocessSettings | None = None, app_name: str = "freshrank"):
    from pyspark.sql import SparkSession

    cfg = cfg or PreprocessSettings()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    if cfg.spark_master:  # empty: the master given by spark-submit applies
        builder = builder.master(cfg.spark_master)
    spark = (
        builder.config("spark.driver.memory", cfg.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    return spark
