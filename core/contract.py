"""The raw data contract (README, "Running it on your own data"), in one place.

What a delivery holds, per day: ``raw/events/dt=<ds>/*.jsonl[.gz]`` with :data:`EVENT_FIELDS`
and ``raw/items/dt=<ds>/*.jsonl[.gz]`` with :data:`ITEM_FIELDS` (name, Spark SQL type).
The preprocessing stage parses by these, the importers and the simulator write them.
"""

from __future__ import annotations

EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase")
POSITIVE_TYPES = ("click", "add_to_cart", "purchase")
EVENT_FIELDS = (
    ("event_id", "string"),  # unique: the dedupe key
    ("event_time", "string"),  # ISO-8601 UTC
    ("event_type", "string"),  # one of EVENT_TYPES
    ("user_id", "string"),
    ("session_id", "string"),
    ("request_id", "string"),  # groups the impressions of one result page; nullable
    ("query", "string"),  # search text; nullable
    ("item_id", "string"),
    ("position", "long"),  # rank shown, for impressions; nullable
    ("price", "double"),  # nullable
)
ITEM_FIELDS = (
    ("item_id", "string"),
    ("title", "string"),
    ("category", "string"),
    ("brand", "string"),
    ("price", "double"),
    ("launch_date", "string"),  # YYYY-MM-DD
)
# Fields without which an event cannot be used: a delivery must carry them.
KEY_FIELDS = ("event_id", "event_time", "event_type", "user_id", "item_id")
EVENT_NAMES = tuple(name for name, _ in EVENT_FIELDS)
ITEM_NAMES = tuple(name for name, _ in ITEM_FIELDS)
