#!/usr/bin/env python3
"""Lists an account's audit log through the official `cloudflare` Python SDK (5.x).

Run by `audit-store/tests/sdk_compat.rs` against a test server: the SDK is pointed at the
server with `base_url` and an API token, lists with `since`/`before`, excludes action types
with the nested `action_type={"not": [...]}` filter and pages on its own (it follows
`result_info.cursors.after`). Prints the ids it saw, in order, as a JSON array on stdout;
anything else goes to stderr.
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

    ids = []
    try:
        for record in client.accounts.logs.audit.list(**params):
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
