"""What the audit log API's OpenAPI description cannot state, told to Schemathesis.

Loaded by `scripts/check-demo-openapi.sh` (`SCHEMATHESIS_HOOKS`). Only cases Schemathesis
generates as valid ("positive") are changed, so that they are valid for the server too; the
invalid ("negative") ones are sent as generated. Two constraints are beyond OpenAPI:

- A `cursor` is valid only as the server issued it (`result_info.cursor` of the previous page,
  signed and bound to the query): a generated string is, rightly, a 400. Valid cases go
  without one.
- The stats endpoint answers at most 1,000 buckets (`audit_store::query::MAX_BUCKETS`): a range
  longer than that many hours (`interval=hour`) or days is, rightly, a 400 that says to narrow
  it. A valid case whose range is too long asks for the empty range at its `since` instead.
"""

from __future__ import annotations

import datetime

import schemathesis

MAX_BUCKETS = 1000
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def _time(value: object) -> datetime.datetime | None:
    """`since`/`before` as the server reads it: a date (midnight UTC) or an RFC 3339 time."""
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            date = datetime.date.fromisoformat(value)
            return datetime.datetime(date.year, date.month, date.day, tzinfo=datetime.timezone.utc)
        return datetime.datetime.fromisoformat(value.upper())
    except ValueError:
        return None


def _too_many_buckets(query: dict) -> bool:
    since, before = _time(query.get("since")), _time(query.get("before"))
    if since is None or before is None or since.tzinfo is None or before.tzinfo is None:
        return True
    interval = query.get("interval")
    if interval is None:
        bucket = HOUR if before - since <= 7 * DAY else DAY
    else:
        bucket = HOUR if interval == "hour" else DAY
    # Buckets are aligned to UTC hours or days: one more at most.
    return (before - since) / bucket + 1 > MAX_BUCKETS


@schemathesis.hook
def before_call(ctx, case, kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if "/logs/audit" not in case.operation.path or not isinstance(case.query, dict):
        return
    case.query.pop("cursor", None)
    if case.operation.path.endswith("/stats") and "since" in case.query:
        if _too_many_buckets(case.query):
            case.query["before"] = case.query["since"]
