"""Every feature's Python function (serving) and Spark expression (training) agree."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import features

pytestmark = pytest.mark.spark

# Characters where Python and Java/ICU are known to be able to differ: separators Java's \s
# misses, combining marks, context-dependent and special casings, letters newer than
# Python's Unicode tables, emoji sequences.
TRICKY = [
    *" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2007\u2028\u202f\u205f\u3000",
    "\u200b",
    "\ufeff",
    "\u0301",
    "\u0308",
    "\u0345",
    "İ",
    "I",
    "ı",
    "Σ",
    "ς",
    "ß",
    "ẞ",
    "ǅ",
    "ﬁ",
    "'",
    ".",
    "\U0001f642",
    "\ua7cb",
    "\U00010d50",
    "\U00016ea0",
    "A",
    "z",
]
CHARS = st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(TRICKY))
TEXTS = st.one_of(
    st.none(),
    st.text(CHARS, max_size=12),
    st.sampled_from(["", " ", "\xa0 \t\n", "Red Shoes", "\U0001f469\u200d\U0001f467"]),
)
PRICES = st.one_of(
    st.none(),
    st.floats(),  # with NaN, infinities, subnormals, -0.0
    st.floats(min_value=0, max_value=10_000),
    st.sampled_from([0.0, -1.0, 175.0, 1e308, 5e-324]),
)
POSITIONS = st.one_of(
    st.none(), st.integers(-5, 60), st.integers(-(2**63), 2**63 - 1), st.just(2**63 - 1)
)
ROWS = st.tuples(TEXTS, TEXTS, TEXTS, TEXTS, TEXTS, PRICES, POSITIONS)
SOURCES = [source for source, _ in features.ID_FEATURES.values()]


def _spark_features(spark, rows):
    schema = ", ".join(
        ["i long", *(f"{s} string" for s in SOURCES), "price double", "position long"]
    )
    df = spark.createDataFrame([(i, *r) for i, r in enumerate(rows)], schema)
    return df.select(
        "i",
        *(features.spark_hash_bucket(n, s).alias(n) for n, (s, _) in features.ID_FEATURES.items()),
        features.spark_normalize_query("query").alias("normalized"),
        features.spark_tokens(features.TITLE_TOKENS, "query").alias("title_words"),
        features.spark_tokens(features.QUERY_TOKENS, "category").alias("query_words"),
        features.spark_log_price("price").alias("log_price"),
        features.spark_position_feature("position").alias("position"),
    ).collect()


# One DataFrame per generated batch: a JVM round trip per batch, not per value.
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(ROWS, min_size=1, max_size=200))
def test_spark_expressions_equal_python_functions(spark, rows):
    for out in sorted(_spark_features(spark, rows), key=lambda r: r.i):
        raw = dict(zip([*SOURCES, "price", "position"], rows[out.i], strict=True))
        for name, (source, _) in features.ID_FEATURES.items():
            assert out[name] == features.hash_bucket(name, raw[source]), (name, raw[source])
        assert out.normalized == features.normalize_query(raw["query"]), raw["query"]
        title_words = features.tokens(features.TITLE_TOKENS, raw["query"])
        assert list(out.title_words) == title_words, raw["query"]
        query_words = features.tokens(features.QUERY_TOKENS, raw["category"])
        assert list(out.query_words) == query_words, raw["category"]
        # Java's log1p (fdlibm) and C's may differ in the last bit of a double; examples hold
        # float32 (EXAMPLE_SCHEMA), where they agree.
        expected = np.float32(features.log_price(raw["price"]))
        assert np.float32(out.log_price) == expected, raw["price"]
        assert out.position == features.position_feature(raw["position"]), raw["position"]


def test_query_rule_agrees_on_every_code_point(spark):
    """Each chunk holds 10,000 consecutive code points (all but surrogates), so every
    separator and every cased letter goes through both lowercasings."""
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    chunks = ["".join(map(chr, points[i : i + 1000])) for i in range(0, len(points), 1000)]
    df = spark.createDataFrame([(i, c) for i, c in enumerate(chunks)], "i long, query string")
    rows = df.select(
        "i",
        features.spark_normalize_query("query").alias("normalized"),
        features.spark_tokens(features.TITLE_TOKENS, "query").alias("title_words"),
        features.spark_hash_bucket("query", "query").alias("bucket"),
    ).collect()
    assert len(rows) == len(chunks)
    for row in rows:
        chunk = chunks[row.i]
        assert row.normalized == features.normalize_query(chunk), hex(ord(chunk[0]))
        assert row.bucket == features.hash_bucket("query", chunk), hex(ord(chunk[0]))
        words = features.tokens(features.TITLE_TOKENS, chunk)
        assert list(row.title_words) == words, hex(ord(chunk[0]))


def test_separators_are_what_str_split_splits_on():
    """Serving's normalization is unchanged: the separators are exactly ``str.isspace``."""
    pattern = re.compile(features.QUERY_SEPARATORS)
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    assert {c for c in points if pattern.fullmatch(c)} == {c for c in points if c.isspace()}
    assert features.normalize_query(" Red\xa0\u2007Shoes\t") == "red shoes"
    assert features.normalize_query("\xa0\u3000") is None
    assert features.normalize_query("ΟΔΟΣ İ") == "οδος i\u0307"


def test_tokens_are_the_first_distinct_words_hashed_and_padded():
    title = features.tokens(features.TITLE_TOKENS, "WHITE  Hanging HEART t-light white heart")
    words = ["white", "hanging", "heart", "t-light"]
    assert title == [features.tokens(features.TITLE_TOKENS, w)[0] for w in words] + [0] * 4
    assert len(set(title[:4])) == 4 and all(title[:4])
    long = features.tokens(features.QUERY_TOKENS, "a b c d e f")
    assert long == features.tokens(features.QUERY_TOKENS, "A B C D")  # the first four
    assert features.tokens(features.QUERY_TOKENS, None) == [0, 0, 0, 0]
    assert features.tokens(features.QUERY_TOKENS, " \t") == [0, 0, 0, 0]


def test_dense_features_edge_values():
    assert features.log_price(None) == features.log_price(math.nan) == 0.0
    assert features.log_price(-3.0) == features.log_price(0.0) == 0.0
    assert features.position_feature(10**30) == 1.0
    assert features.position_feature(-1) == features.position_feature(None) == 0.0
