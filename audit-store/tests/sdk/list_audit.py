#!/usr/bin/env python3
"""Lists an account's audit log through the official `cloudflare` Python SDK (5.x).

Run by `audit-store/tests/sdk_compat.rs` against a test server: the SDK is pointed at the
server with `base_url` and an API token, lists with `since`/`before`, excludes action types
with the nested `action_type={"not": [...]}` filter and pages on its own (it follows
`result_info.cursors.after`). Prints the ids it saw, in order, as a JSON array on stdout
(with `--fields`, each record's id and the typed attributes `raw.cf_rayid`, `actor.token_id`
and `actor.token_name` instead); anything else goes to stderr.

`--categories` prints the product categories (`audit.product_categories`) as
`[[value, [product, ...]], ...]` instead; `--history ID --action-time T` the ids of the
resource history of the audit log ID (`audit.history`).
"""

import argparse
import datetime
import json
import sys

import cloudflare
from cloudflare import Cloudflare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--since", required=True, help="YYYY-MM-DD or RFC 3339")
    parser.add_argument("--before", required=True, help="YYYY-MM-DD or RFC 3339")
    parser.add_argument("--limit", type=float, default=None, help="sent as the SDK types it: a float")
    parser.add_argument("--direction", choices=["asc", "desc"], default=None)
    parser.add_argument(
        "--not-action-type", action="append", default=None, help="repeatable; default: view"
    )
    parser.add_argument(
        "--not-actor-type", action="append", default=None, help="repeatable: actor_type.not"
    )
    parser.add_argument(
        "--product-category", action="append", default=None, help="repeatable: product_category"
    )
    parser.add_argument(
        "--fields",
        action="store_true",
        help="print [id, raw.cf_rayid, actor.token_id, actor.token_name] of each record",
    )
    parser.add_argument("--categories", action="store_true", help="list the product categories")
    parser.add_argument("--history", default=None, help="the history of this audit log id")
    parser.add_argument("--action-time", default=None, help="with --history: its action.time")
    parser.add_argument(
        "--dates-as-objects",
        action="store_true",
        help="pass since/before as datetime.date objects (YYYY-MM-DD only)",
    )
    args = parser.parse_args()

    since, before = args.since, args.before
    if args.dates_as_objects:
        since = datetime.date.fromisoformat(since)
        before = datetime.date.fromisoformat(before)

    # No proxies from the environment, no retries: the first answer is the answer.
    client = Cloudflare(
        api_token=args.token,
        base_url=args.base_url,
        max_retries=0,
        http_client=cloudflare.DefaultHttpxClient(trust_env=False),
    )
    params = {
        "account_id": args.account,
        "since": since,
        "before": before,
        "action_type": {"not": args.not_action_type or ["view"]},
    }
    if args.limit is not None:
        params["limit"] = args.limit
    if args.direction is not None:
        params["direction"] = args.direction
    if args.not_actor_type is not None:
        params["actor_type"] = {"not": args.not_actor_type}
    if args.product_category is not None:
        params["product_category"] = args.product_category

    audit = client.accounts.logs.audit
    ids = []
    try:
        if args.categories:
            for category in audit.product_categories(account_id=args.account):
                ids.append([category.value, [p.value for p in category.products or []]])
        elif args.history is not None:
            entries = audit.history(
                args.history,
                account_id=args.account,
                since=since,
                before=before,
                action_time=args.action_time,
            )
            ids = [entry.id for entry in entries]
        else:
            for record in audit.list(**params):
                if args.fields:
                    ids.append(
                        [record.id, record.raw.cf_rayid, record.actor.token_id, record.actor.token_name]
                    )
                else:
                    ids.append(record.id)
    except cloudflare.APIStatusError as e:
        print(f"HTTP {e.status_code}: {e.response.text}", file=sys.stderr)
        return 2
    print(f"{len(ids)} records", file=sys.stderr)
    json.dump(ids, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
