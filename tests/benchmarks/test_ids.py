"""The pieces of the new-id benchmark: the growing table, the small hash table, collisions."""

from __future__ import annotations

import numpy as np

from benchmarks import ids as bench_ids
from core import features
from core.settings import defaults


def test_vocabulary_gives_rows_in_order_of_arrival_and_row_0_to_unknown_ids():
    vocab = bench_ids.Vocabulary()
    assert vocab.grow(["u2", "u1", "u2"]) == 2
    assert vocab.grow(["u1", "u3"]) == 1
    assert len(vocab) == 4  # three ids and row 0
    assert vocab.lookup(["u1", "u2", "u3", "never"]).tolist() == [2, 1, 3, 0]


def test_a_grown_table_keeps_every_trained_weight():
    cfg = defaults().train
    variant = bench_ids.Variant("growing_table", cfg)
    variant.vocab["user"].grow(["u1", "u2"])
    variant.vocab["item"].grow(["i1"])
    variant.model = variant._grown()
    old = {layer.name: layer.get_weights() for layer in variant.model.layers}
    variant.vocab["user"].grow(["u3", "u4", "u5"])
    grown = variant._grown()

    user = grown.get_layer("user_embedding").get_weights()[0]
    assert user.shape[0] == 6 and old["user_embedding"][0].shape[0] == 3
    np.testing.assert_array_equal(user[:3], old["user_embedding"][0])
    assert np.abs(user[3:]).sum() > 0  # the new rows are initialised, not zero
    for layer in grown.layers:
        if layer.name != "user_embedding":
            for w, o in zip(layer.get_weights(), old[layer.name], strict=True):
                np.testing.assert_array_equal(w, o)


def test_small_table_uses_the_production_hash_with_fewer_buckets():
    ids = np.array(["u1", "u2", "u1", "u99"], dtype=object)
    buckets = bench_ids.hashed("user", ids, bench_ids.SMALL_BUCKETS)
    expected = [features.hash_bucket("user", v, bench_ids.SMALL_BUCKETS) for v in ids]
    assert buckets.tolist() == expected
    assert buckets[0] == buckets[2]
    assert all(1 <= b < bench_ids.SMALL_BUCKETS for b in buckets)
    assert features.hash_bucket("user", "u1") == features.hash_bucket(
        "user", "u1", features.ID_FEATURES["user"][1]
    )
    assert bench_ids.hashed("user", ids).tolist() == [features.hash_bucket("user", v) for v in ids]


def test_shared_share_counts_ids_whose_bucket_holds_another_id():
    ids = ["a", "b", "c", "d", "a"]
    buckets = [1, 1, 2, 3, 1]  # a and b share bucket 1; "a" twice is one id
    assert bench_ids.shared_share(ids, buckets) == 0.5
