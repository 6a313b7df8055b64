"""Request rows become model inputs with the online store's features (no Spark, no model):
known ids take the stored values, new ids and guests what training gave them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import features
from serving import store as online
from serving.inputs import RAW_COLUMNS, input_example, model_inputs, signature

ITEM_STATE = {name: 0.1 * (k + 1) for k, name in enumerate(features.ITEM_STATE)}
USER_STATE = {name: 0.05 * (k + 1) for k, name in enumerate(features.USER_STATE)}
HISTORY = [features.hash_bucket("item", "i1")] + [0] * (features.HISTORY_LENGTH - 1)


def tables() -> dict[str, pd.DataFrame]:
    """The store's tables as jobs.feature_state.online_tables writes them: item i1 (shoes),
    user u1 who bought i1 and likes shoes."""
    title = features.tokens(features.TITLE_TOKENS, "Red running shoe")
    item = pd.DataFrame(
        {
            "item_id": ["i1"],
            "category": ["shoes"],
            "catalog_log_price": [float(features.log_price(20.0))],
            "item_bucket": [features.hash_bucket("item", "i1")],
            "category_bucket": [features.hash_bucket("category", "shoes")],
            "brand_bucket": [features.hash_bucket("brand", "acme")],
            features.TITLE_TOKENS: [np.array(title)],
            **{k: [v] for k, v in ITEM_STATE.items()},
        }
    )
    user = pd.DataFrame(
        {
            "user_id": ["u1"],
            "user_bucket": [features.hash_bucket("user", "u1")],
            **{k: [v] for k, v in USER_STATE.items()},
            features.HISTORY_BUCKETS: [np.array(HISTORY)],
            features.HISTORY_WEIGHTS: [np.array([1.0] + [0.0] * 9)],
        }
    )
    pairs = {
        "user_category": pd.DataFrame(
            {"user_id": ["u1"], "category": ["shoes"], "user_category_affinity": [0.75]}
        ),
        "user_item": pd.DataFrame(
            {"user_id": ["u1"], "item_id": ["i1"], "user_item_affinity": [0.5]}
        ),
    }
    return {"item": item, "user": user, **pairs}


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store.sqlite"
    assert online.load(path, tables(), "2026-11-20") == {t: 1 for t in online.KEYS}
    return online.OnlineStore(path)


def dense(inputs, row: int) -> dict[str, np.float32]:
    return dict(zip(features.DENSE_FEATURES, inputs["dense"][row], strict=True))


def new_id(name: str) -> np.float32:
    """What the model gets for a feature of an id the state has never seen."""
    return np.float32(features.STATE_DEFAULTS[name])


def test_known_ids_take_the_stored_features_new_ids_and_guests_the_new_id_values(store):
    raw = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u_new", None],
            "item_id": ["i1", "i_new", "i1", "i1"],
            "query": ["Red  Shoes", None, "red shoes", None],
            "price": [np.nan, 5.0, 30.0, None],
            "position": [3, None, 0, 80],
        }
    )
    inputs, found = model_inputs(raw, store)
    assert found == {"users": 2, "users_known": 1, "items": 2, "items_known": 1}
    ids = {c: inputs[c].ravel().tolist() for c in features.ID_COLUMNS}
    i1, u1 = features.hash_bucket("item", "i1"), features.hash_bucket("user", "u1")
    assert ids["item_bucket"] == [i1, features.hash_bucket("item", "i_new"), i1, i1]
    assert ids["user_bucket"] == [u1, u1, features.hash_bucket("user", "u_new"), 0]
    shoes = features.hash_bucket("category", "shoes")
    assert ids["category_bucket"] == [shoes, 0, shoes, shoes]
    red_shoes = features.hash_bucket("query", "red shoes")
    assert ids["query_bucket"] == [red_shoes, 0, red_shoes, 0]

    known = dense(inputs, 0)  # u1 x i1: every state feature from the store
    for name, value in {**ITEM_STATE, **USER_STATE}.items():
        assert known[name] == pytest.approx(value), name
    assert known["user_category_affinity"] == 0.75 and known["user_item_affinity"] == 0.5
    assert known["log_price"] == pytest.approx(np.log1p(20.0))  # no price: the catalog's
    assert known["position"] == pytest.approx(3 / features.MAX_POSITION)
    assert list(inputs[features.HISTORY_BUCKETS][0]) == HISTORY
    assert list(inputs[features.TITLE_TOKENS][0]) == features.tokens(
        features.TITLE_TOKENS, "Red running shoe"
    )

    new_item = dense(inputs, 1)  # a new item: the new-id values, its own price
    for name in features.ITEM_STATE:
        assert new_item[name] == new_id(name), name
    assert new_item["log_price"] == pytest.approx(np.log1p(5.0))
    assert new_item["user_item_affinity"] == 0 and list(inputs[features.TITLE_TOKENS][1]) == [0] * 8
    for row in (2, 3):  # a new user and a guest: no state, no history
        values = dense(inputs, row)
        for name in (*features.USER_STATE, *features.PAIR_STATE.values()):
            assert values[name] == new_id(name), (row, name)
        assert not inputs[features.HISTORY_WEIGHTS][row].any()
    assert dense(inputs, 3)["position"] == 1.0  # capped at MAX_POSITION


def test_the_request_catalog_fields_win_over_the_store(store):
    raw = pd.DataFrame(
        {"user_id": ["u1"], "item_id": ["i1"], "category": ["bags"], "title": ["Blue bag"]}
    )
    inputs, _ = model_inputs(raw, store)
    assert inputs["category_bucket"][0, 0] == features.hash_bucket("category", "bags")
    assert inputs["brand_bucket"][0, 0] == features.hash_bucket("brand", "acme")  # not given
    assert list(inputs[features.TITLE_TOKENS][0]) == features.tokens(
        features.TITLE_TOKENS, "Blue bag"
    )
    assert dense(inputs, 0)["user_category_affinity"] == 0  # u1 never bought bags


def test_inputs_without_a_store_are_a_new_users_and_items(store):
    raw = input_example()
    with_store, _ = model_inputs(raw, None)
    assert set(with_store) == set(features.MODEL_INPUTS)
    assert with_store["dense"].shape == (2, len(features.DENSE_FEATURES))
    assert with_store[features.HISTORY_BUCKETS].shape == (2, features.HISTORY_LENGTH)
    for name in features.STATE_FEATURES:
        column = with_store["dense"][:, features.DENSE_FEATURES.index(name)]
        assert (column == new_id(name)).all(), name


def test_bad_requests_name_the_column_or_row(store):
    with pytest.raises(ValueError, match="lack the column 'item_id'"):
        model_inputs(pd.DataFrame({"user_id": ["u1"]}), store)
    with pytest.raises(ValueError, match="request row 1: item_id is missing"):
        model_inputs(pd.DataFrame({"item_id": ["i1", None]}), store)
    with pytest.raises(TypeError, match="a pandas DataFrame, not dict"):
        model_inputs({"item_id": ["i1"]}, store)


BAD_COLUMNS = {  # a column of an unusable type -> what the error says
    "item_id": ([1, 2], "'item_id' has dtype int64: strings are expected"),
    "user_id": ([np.nan, np.nan], "'user_id' has dtype float64: strings are expected"),
    "category": (pd.Categorical(["a", "b"]), "'category' has dtype category: strings"),
    "brand": ([True, False], "'brand' has dtype bool: strings are expected"),
    "price": (["1.5", "cheap"], "'price': row 1 is not a number \\('cheap'\\)"),
    "position": (pd.to_datetime(["2026-11-20"] * 2), "'position' has dtype datetime64"),
    "title": (pd.array([1, 2], dtype="Int64"), "'title' has dtype Int64: strings"),
}


@pytest.mark.parametrize("column", BAD_COLUMNS)
def test_a_column_of_an_unusable_type_is_refused_by_name(store, column):
    values, error = BAD_COLUMNS[column]
    raw = pd.DataFrame({"item_id": ["i1", "i2"], column: values})
    before = raw.copy()
    with pytest.raises(ValueError, match=error):
        model_inputs(raw, store)
    pd.testing.assert_frame_equal(raw, before)  # the caller's frame is left as it was


def test_a_column_given_twice_is_refused_by_name(store):
    raw = pd.DataFrame([["i1", "u1", "u2"]], columns=["item_id", "user_id", "user_id"])
    with pytest.raises(ValueError, match="'user_id' is given twice"):
        model_inputs(raw, store)


def test_numbers_and_strings_of_any_usable_dtype_give_the_same_inputs(store):
    """ints, nullable ints, objects holding numbers or None; pandas' string dtype: the
    inputs of the float64 and object columns MLflow's schema passes on."""
    want = model_inputs(
        pd.DataFrame(
            {
                "item_id": ["i1", "i2", "i1"],
                "user_id": ["u1", None, "u1"],
                "price": [20.0, np.nan, 3.0],
                "position": [1.0, 2.0, np.nan],
                "query": ["red shoes", None, "red shoes"],
            }
        ),
        store,
    )[0]
    for other in (
        {"price": [20, None, 3], "position": pd.array([1, 2, None], dtype="Int64")},
        {"price": np.array([20, None, 3.0], dtype=object), "position": [1.0, 2.0, None]},
        {
            "user_id": pd.array(["u1", None, "u1"], dtype="string"),
            "query": pd.array(["red shoes", None, "red shoes"], dtype="string"),
        },
    ):
        raw = pd.DataFrame(
            {
                "item_id": ["i1", "i2", "i1"],
                "user_id": ["u1", None, "u1"],
                "price": [20.0, np.nan, 3.0],
                "position": [1.0, 2.0, np.nan],
                "query": ["red shoes", None, "red shoes"],
                "extra": ["ignored", "ignored", "ignored"],
                **other,
            }
        )
        got = model_inputs(raw, store)[0]
        for name, values in want.items():
            np.testing.assert_array_equal(got[name], values, err_msg=f"{name} {list(other)}")


def test_columns_are_read_the_public_way_where_pandas_lacks_its_own(store, monkeypatch):
    raw = pd.DataFrame(
        {
            "user_id": pd.array(["u1", None], dtype="string"),
            "item_id": ["i1", "i_new"],
            "position": pd.array([3, None], dtype="Int64"),
            "price": [np.nan, 5.0],
        }
    )
    want = model_inputs(raw, store)[0]
    monkeypatch.delattr(pd.DataFrame, "_get_column_array")
    for name, values in model_inputs(raw, store)[0].items():
        np.testing.assert_array_equal(values, want[name], err_msg=name)


def test_score_checks_the_request_and_scores_as_predict(store):
    """The in-process path: the same inputs as predict, the same check, its errors naming
    the column; nothing but the rows' scores comes back."""
    from serving.model import RankerModel

    class Scorer:  # one score per row from its inputs: any input that differs shows
        def predict(self, inputs):
            return np.hstack([v.reshape(len(v), -1) for v in inputs.values()]).sum(axis=1)

    model = RankerModel()
    model.store, model.scorer = store, Scorer()
    raw = pd.DataFrame(
        {"user_id": ["u1", "u1", None], "item_id": ["i1", "i2", "i1"], "position": [1.0, 2, 3]}
    )
    scores = model.score(raw)
    assert scores.shape == (3,) and scores[0] != scores[1]
    assert scores.tobytes() == model.predict(None, raw).tobytes()
    with pytest.raises(ValueError, match="lack the column 'item_id'"):
        model.score(raw.drop(columns="item_id"))
    with pytest.raises(ValueError, match="'position': row 0 is not a number"):
        model.score(raw.assign(position=["first", 2, 3]))
    with pytest.raises(ValueError, match="'user_id' has dtype int64"):
        model.score(raw.assign(user_id=[1, 2, 3]))


def test_a_store_behind_the_model_is_refused_and_a_newer_night_is_picked_up(store, tmp_path):
    path = store.path
    with pytest.raises(online.StoreBehindError, match="after 2026-11-20.*after 2026-11-21"):
        online.OnlineStore(path, min_state_as_of="2026-11-21")
    assert online.OnlineStore(path, min_state_as_of="2026-11-19").state_as_of == "2026-11-20"
    model_inputs(pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"]}), store)  # now in memory
    newer = tables()
    newer["user"]["user_ctr"] = 0.9
    online.load(path, newer, "2026-11-21")  # the next night, renamed over the old file
    assert store.refresh() and store.state_as_of == "2026-11-21"
    inputs, _ = model_inputs(pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"]}), store)
    assert dense(inputs, 0)["user_ctr"] == pytest.approx(0.9)
    assert not store.refresh()
    with pytest.raises(FileNotFoundError, match="run the nightly DAG's materialize"):
        online.OnlineStore(tmp_path / "none.sqlite")


def shop_tables(n: int, rng) -> dict[str, pd.DataFrame]:
    """``n`` items and users with random values, every user with some pairs."""
    base = tables()
    items = pd.concat([base["item"]] * n, ignore_index=True)
    items["item_id"] = [f"i{k}" for k in range(n)]
    items["category"] = [f"c{k % 7}" for k in range(n)]
    users = pd.concat([base["user"]] * n, ignore_index=True)
    users["user_id"] = [f"u{k}" for k in range(n)]
    for frame, names in ((items, features.ITEM_STATE), (users, features.USER_STATE)):
        for name in names:
            frame[name] = rng.random(n)
    pairs = {
        "user_category": ("category", [f"c{k}" for k in range(7)], "user_category_affinity"),
        "user_item": ("item_id", list(items["item_id"]), "user_item_affinity"),
    }
    out = {"item": items, "user": users}
    for table, (key, keys, value) in pairs.items():
        rows = [(f"u{u}", k) for u in range(n) for k in rng.choice(keys, 3, replace=False)]
        out[table] = pd.DataFrame(rows, columns=["user_id", key]).assign(
            **{value: rng.random(len(rows))}
        )
    return out


def test_ids_held_in_memory_give_the_same_inputs_as_sqlite(tmp_path):
    """A small memory that keeps dropping ids (and guests, new ids) changes no input."""
    rng = np.random.default_rng(0)
    path = tmp_path / "store.sqlite"
    online.load(path, shop_tables(40, rng), "2026-11-20")
    held, sqlite_only = (
        online.OnlineStore(path, cache_ids=12),
        online.OnlineStore(path, cache_ids=0),
    )
    for _ in range(60):
        n = int(rng.integers(1, 7))
        raw = pd.DataFrame(
            {
                "user_id": rng.choice([*(f"u{k}" for k in range(45)), None], n),
                "item_id": rng.choice([f"i{k}" for k in range(50)], n),  # i40..i49: new
                "position": np.arange(1.0, n + 1),
            }
        )
        got, expected = model_inputs(raw, held)[0], model_inputs(raw, sqlite_only)[0]
        for name, values in expected.items():
            np.testing.assert_array_equal(got[name], values, err_msg=name)
    stats = held.stats()
    assert 0 < stats["from_memory"] < stats["looked_up"]  # held some ids, dropped others
    assert sqlite_only.stats()["from_memory"] == 0


def test_a_batch_of_many_users_gives_each_row_the_inputs_of_its_own_request(tmp_path):
    """One user's request looks its pairs up by dict, a batch of users by a sorted search:
    the same values, with the request's categories or the store's."""
    rng = np.random.default_rng(1)
    path = tmp_path / "store.sqlite"
    online.load(path, shop_tables(30, rng), "2026-11-20")
    store = online.OnlineStore(path)
    n = 400
    raw = pd.DataFrame(
        {
            "user_id": rng.choice([*(f"u{k}" for k in range(35)), None], n),
            "item_id": rng.choice([f"i{k}" for k in range(36)], n),
            "category": rng.choice([*(f"c{k}" for k in range(8)), None, None, None], n),
        }
    )
    for catalog in (True, False):
        rows = raw if catalog else raw.drop(columns="category")
        batch = model_inputs(rows, store)[0]
        guests = rows["user_id"].isna()
        for user in rows["user_id"].dropna().unique():  # a user's rows, and the guests'
            request = rows[(rows["user_id"] == user) | guests]
            one = model_inputs(request, store)[0]
            for name, values in one.items():
                np.testing.assert_array_equal(batch[name][request.index], values, err_msg=name)
        affinity = batch["dense"][:, features.DENSE_FEATURES.index("user_category_affinity")]
        assert (affinity > 0).sum() > 20  # pairs were found


def test_the_signature_lists_the_request_columns_and_requires_only_item_id():
    sig = signature()
    assert sig.inputs.input_names() == list(RAW_COLUMNS)
    assert [c.name for c in sig.inputs.inputs if c.required] == ["item_id"]
    assert list(input_example()) == list(RAW_COLUMNS)
