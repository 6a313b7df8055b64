"""Importers of public log formats: mapping, dirty rows, counts, days, ids, and the pipeline.

Each test writes a small file in the layout of the real data set (Tianchi UserBehavior,
UCI Online Retail) and imports it with Spark into a temporary data root.
"""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from core import features
from core.contract import EVENT_NAMES
from core.layout import Layout
from jobs.importers import ImportOptions, import_file, retail_columns
from jobs.preprocess import data_files, preprocess_day

# 2017-11-25 12:00:00 UTC and the next day.
T0 = 1_511_611_200
T1 = T0 + 86_400
RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def read_day(root, ds, kind="events") -> pd.DataFrame:
    layout = Layout(root)
    folder = layout.raw_events(ds) if kind == "events" else layout.raw_items(ds)
    files = data_files(folder)
    assert files, f"no data files in {folder}"
    assert (folder / "_SUCCESS").exists()
    rows = [json.loads(line) for f in files for line in gzip.open(f, "rt")]
    return pd.DataFrame(rows)


def quarantine(root, fmt, name) -> pd.DataFrame:
    return pd.read_parquet(Layout(root).root / "import_quarantine" / fmt / name)


def reconciled(s: dict) -> bool:
    total = s["rows_written"] + s["rows_quarantined"] + s["rows_dropped"]
    per_day = list(s["days"].values()) + ([s["no_day"]] if s["no_day"] else [])
    return (
        s["reconciled"]
        and s["rows_in"] == total
        and sum(d["rows"] for d in per_day) == s["rows_in"]
        and all(
            d["rows"] == d.get("written", 0) + d.get("quarantined", 0) + d.get("dropped", 0)
            for d in per_day
        )
    )


TAOBAO_LINES = [
    f"1,100,7,pv,{T0}",
    f"1,100,7,cart,{T0 + 10}",
    f"1,100,7,fav,{T0 + 20}",
    f"1,100,7,buy,{T0 + 30}",
    f",101,8,pv,{T0 + 40}",  # no user: written with user_id null
    f"2,,8,pv,{T0 + 50}",  # no item
    f"2,102,8,hover,{T0 + 60}",  # unknown behaviour
    "2,102,8,pv,yesterday",  # not a time
    "2,102,8,pv,99999999999",  # year 5138: a broken clock
    f"2,102,8,pv,{T0},extra",  # one field too many
    "",  # blank line
    f"2,103,9,PV,{T1}",  # next day, upper-case behaviour
    f"2,103,11,pv,{T1 + 5}",  # the item's category changed during the day
    f"2,103,11,pv,{T1 + 5}",  # the same line again: a logged retry
]


def test_taobao_mapping_bad_rows_counts_and_days(spark, tmp_path):
    src = write(tmp_path / "UserBehavior.csv", TAOBAO_LINES)
    root = tmp_path / "data"

    s = import_file(spark, "taobao", src, root)

    assert s["rows_in"] == len(TAOBAO_LINES)
    assert reconciled(s)
    assert s["quarantined_by_reason"] == {
        "null_item_id": 1,
        "unknown_behavior": 1,
        "bad_timestamp": 2,
        "malformed_line": 1,
    }
    assert s["dropped_by_reason"] == {"blank_line": 1}
    assert s["written_by_event_type"] == {"click": 5, "add_to_cart": 2, "purchase": 1}
    assert list(s["days"]) == ["2017-11-25", "2017-11-26"]
    assert s["days"]["2017-11-25"]["written"] == 5 and s["days"]["2017-11-26"]["written"] == 3
    assert s["days"]["2017-11-25"]["quarantined_by_reason"] == {
        "null_item_id": 1,
        "unknown_behavior": 1,
        "malformed_line": 1,
    }
    # Rows without a readable time have no day.
    assert s["no_day"] == {
        "rows": 3,
        "quarantined": 2,
        "quarantined_by_reason": {"bad_timestamp": 2},
        "dropped": 1,
        "dropped_by_reason": {"blank_line": 1},
    }

    day = read_day(root, "2017-11-25").sort_values("event_time")
    assert list(day.columns) == list(EVENT_NAMES)
    mine = day[day["user_id"] == "1"]
    assert list(mine["event_type"]) == ["click", "add_to_cart", "add_to_cart", "purchase"]
    assert mine["event_time"].iloc[0] == "2017-11-25T12:00:00Z"
    assert set(mine["session_id"]) == {"1@2017-11-25"}
    assert day["request_id"].isna().all() and day["position"].isna().all()
    assert day["user_id"].isna().sum() == 1  # passed on for preprocessing to quarantine
    assert day["event_id"].is_unique and day["event_id"].str.startswith("tb-").all()

    nxt = read_day(root, "2017-11-26")
    assert list(nxt["event_type"]) == ["click"] * 3
    assert nxt["event_id"].nunique() == 2  # the retried line keeps its id: a duplicate later
    items = read_day(root, "2017-11-26", "items").set_index("item_id")
    assert items.loc["103", "category"] == "11"  # the latest category of the day
    assert items.loc["103", ["title", "brand", "price"]].isna().all()

    bad = quarantine(root, "taobao", "UserBehavior.csv")
    assert len(bad) == s["rows_quarantined"]
    assert set(bad.loc[bad["reason"] == "bad_timestamp", "line"]) == {
        "2,102,8,pv,yesterday",
        "2,102,8,pv,99999999999",
    }
    summary = json.loads((root / "runs" / "import").glob("taobao-*.json").__next__().read_text())
    assert summary["rows_in"] == s["rows_in"] and summary["reconciled"]


def test_taobao_fav_can_be_dropped_and_days_limited(spark, tmp_path):
    src = write(tmp_path / "ub.csv", TAOBAO_LINES)
    opts = ImportOptions(fav="drop", until="2017-11-25")

    s = import_file(spark, "taobao", src, tmp_path / "data", opts)

    assert reconciled(s)
    assert s["dropped_by_reason"] == {"blank_line": 1, "fav": 1}
    assert s["quarantined_by_reason"]["out_of_range"] == 3
    assert s["written_by_event_type"] == {"click": 2, "add_to_cart": 1, "purchase": 1}
    assert list(s["days"]) == ["2017-11-25", "2017-11-26"]  # counted, only one day written
    assert not Layout(tmp_path / "data").raw_events("2017-11-26").exists()


RETAIL_LINES = [
    RETAIL_HEADER,
    '536365,85123A,"WHITE HANGING HEART, T-LIGHT HOLDER",6,12/1/2010 8:26,2.55,17850.0,UK',
    "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850.0,UK",
    "536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,,UK",  # no customer
    "C536379,D,Discount,-1,12/1/2010 9:41,27.50,14527,UK",  # a cancellation
    "C536383,35004C,SET OF 3 COLOURED  FLYING DUCKS,-1,12/1/2010 9:49,4.65,15311,UK",
    "A563185,B,Adjust bad debt,1,8/12/2011 14:50,11062.06,,UK",
    "536414,22139,,-56,12/1/2010 11:52,0,,UK",  # stock written off
    "536415,POST,POSTAGE,1,12/1/2010 11:57,18,12583,France",
    "536416,22140,TOY,many,12/1/2010 12:00,1,12583,France",
    "536417,22141,TOY,1,12/1/2010 12:00,cheap,12583,France",
    "536418,22142,TOY,1,not a date,1,12583,France",
    '536419,"22143,TOY,1,12/1/2010 12:00,1,12583,France',  # broken quoting
    "536420,,TOY,1,12/1/2010 12:00,1,12583,France",
    "536421,22144,TOY,1,12/1/2010 12:00",  # cut short
    "536422,85123A,WHITE HANGING HEART T-LIGHT,2,2010-12-02 10:00:00,2.95,13047,UK",
    "536423,22145,JUG,1,2010-12-02T11:30:00Z,5,13047,UK",
]


def test_retail_purchases_returns_and_missing_customers(spark, tmp_path):
    src = write(tmp_path / "online_retail.csv", RETAIL_LINES)
    root = tmp_path / "data"

    s = import_file(spark, "retail", src, root)

    assert s["rows_in"] == len(RETAIL_LINES)
    assert reconciled(s)
    assert s["dropped_by_reason"] == {"header": 1}
    assert s["quarantined_by_reason"] == {
        "return": 2,
        "adjustment": 1,
        "non_positive_quantity": 1,
        "non_product": 1,
        "bad_quantity": 1,
        "bad_price": 1,
        "bad_timestamp": 1,
        "malformed_line": 2,
        "null_item_id": 1,
    }
    assert s["written_by_event_type"] == {"purchase": 5}
    assert {d: v["written"] for d, v in s["days"].items()} == {
        "2010-12-01": 3,
        "2010-12-02": 2,
        "2011-08-12": 0,
    }

    day = read_day(root, "2010-12-01").set_index("item_id")
    assert set(day["event_type"]) == {"purchase"}
    assert day.loc["85123A", "user_id"] == "17850"  # "17850.0" as exported by pandas
    assert day.loc["85123A", "session_id"] == "536365"  # the invoice
    assert day.loc["85123A", "price"] == 2.55
    assert day.loc["85123A", "event_time"] == "2010-12-01T08:26:00Z"
    assert day["request_id"].isna().all()
    assert pd.isna(day.loc["22633", "user_id"])  # for preprocessing to quarantine
    assert "D" not in day.index and "35004C" not in day.index  # returns never purchase
    nxt = read_day(root, "2010-12-02").set_index("item_id")
    assert nxt.loc["22145", "event_time"] == "2010-12-02T11:30:00Z"

    items = read_day(root, "2010-12-01", "items").set_index("item_id")
    assert items.loc["85123A", "title"] == "WHITE HANGING HEART, T-LIGHT HOLDER"
    assert items.loc["85123A", "price"] == 2.55
    assert pd.isna(items.loc["85123A", "category"])

    bad = quarantine(root, "retail", "online_retail.csv")
    returns = bad[bad["reason"] == "return"]
    assert set(returns["item_id"]) == {"D", "35004C"}
    assert returns["line"].str.startswith("C").all()


def test_retail_header_variants_and_guest_users(spark, tmp_path):
    header = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country"
    lines = [
        header,
        "489434,85048,15CM CHRISTMAS GLASS BALL,12,2009-12-01 07:45:00,6.95,13085.0,UK",
        "489435,22350,CAT BOWL,12,2009-12-01 07:46:00,2.55,,UK",
        header,  # a second file appended to the first
    ]
    src = write(tmp_path / "online_retail_II.csv", lines)
    opts = ImportOptions(missing_user="invoice")

    s = import_file(spark, "retail", src, tmp_path / "data", opts)

    assert reconciled(s) and s["dropped_by_reason"] == {"header": 2}
    day = read_day(tmp_path / "data", "2009-12-01").set_index("item_id")
    assert day.loc["85048", "user_id"] == "13085"
    assert day.loc["22350", "user_id"] == "guest-489435"


def test_retail_header_must_name_the_columns():
    assert retail_columns("Customer ID,Invoice,StockCode,Description,Quantity,InvoiceDate,Price")[
        :2
    ] == ["CustomerID", "InvoiceNo"]
    with pytest.raises(ValueError, match="lacks \\['InvoiceDate'\\]"):
        retail_columns("InvoiceNo,StockCode,Description,Quantity,UnitPrice,CustomerID")


def test_reimport_keeps_ids_replaces_its_files_and_keeps_other_sources(spark, tmp_path):
    root = tmp_path / "data"
    layout = Layout(root)
    src = write(tmp_path / "UserBehavior.csv", TAOBAO_LINES)
    # Another delivery already in one of the days.
    layout.raw_events("2017-11-25").mkdir(parents=True)
    (layout.raw_events("2017-11-25") / "part-00000.jsonl").write_text('{"event_id": "x"}\n')

    first = import_file(spark, "taobao", src, root)
    ids = sorted(read_day(root, "2017-11-26")["event_id"])
    second = import_file(spark, "taobao", src, root)

    assert first["rows_written"] == second["rows_written"]
    assert sorted(read_day(root, "2017-11-26")["event_id"]) == ids
    names = sorted(p.name for p in data_files(layout.raw_events("2017-11-25")))
    assert names[0] == "part-00000.jsonl" and len(names) == 2  # kept + one of ours
    # A smaller re-import of the same file clears the days it no longer fills.
    import_file(spark, "taobao", src, root, ImportOptions(until="2017-11-25"))
    assert not layout.raw_events("2017-11-26").exists()
    assert len(list((root / "runs" / "import").glob("taobao-*.json"))) == 3


def test_imported_retail_day_goes_through_preprocessing(spark, settings, tmp_path):
    """A purchases-only log: preprocessing samples negatives and its counts reconcile."""
    lines = [RETAIL_HEADER]
    for i in range(60):
        invoice, customer = 540000 + i // 3, 12000 + i // 3
        item = f"2{i % 11:04d}"
        lines.append(f"{invoice},{item},ITEM {item},2,1/5/2011 {9 + i // 10}:{i % 60:02d},"
                     f"{1 + i % 7}.5,{customer},UK")  # fmt: skip
    lines += [
        "540100,21000,ITEM,1,1/5/2011 18:00,2.5,,UK",  # no customer
        "540100,21000,ITEM,1,1/5/2011 18:00,2.5,,UK",
        "C540101,21001,ITEM,-1,1/5/2011 18:30,2.5,12001,UK",  # a return
        lines[5],  # a duplicated line
    ]
    src = write(tmp_path / "retail.csv", lines)
    ds = "2011-01-05"

    imported = import_file(spark, "retail", src, settings.data_root)
    s = preprocess_day(spark, ds, settings)

    assert reconciled(imported)
    assert s["rows_in"] == imported["days"][ds]["written"] == 63
    assert s["reconciled"]
    assert s["quarantined_by_reason"] == {}
    # The guest's line (valid, for the item state only) came twice: one event, one duplicate.
    assert s["anonymous"] == 1
    assert s["duplicates"] == 2
    assert s["labels_from"] == "sampled_negatives"
    ex = pd.read_parquet(Layout(settings.data_root).examples(ds))
    pos, neg = ex[ex[features.LABEL] == 1], ex[ex[features.LABEL] == 0]
    assert len(pos) == 60 and len(ex) == s["examples"]
    assert (pos[features.PURCHASE_LABEL] == 1).all()
    # Every invoice gets sampled negatives (jobs.preprocess draws them per invoice and user).
    assert set(neg["request_id"]) == set(pos["request_id"])
    # A negative is never an item bought on the same invoice.
    assert neg.merge(pos, on=["request_id", "item_id"]).empty
    assert set(ex["request_id"]) <= {str(540000 + i // 3) for i in range(60)}
    assert s["catalog_items"] == 12  # the imported items delta became the catalog
