"""``python -m agentcom token create|list|revoke``: token management without the hub.

Works whether or not a hub runs on the same data dir: it writes the same
SQLite file, and a running hub notices the change on its next token check.
Like the hub, it creates the data dir and the token file for their owner only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agentcom.clock import now_ms
from agentcom.config import HubConfig
from agentcom.logs import configure_logging
from agentcom.messages import StorageFull
from agentcom.store import ROLES, TokenStore, open_tokens_db
from agentcom.validation import AGENT_ID_MAX_CHARS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agentcom", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="create, list or revoke tokens")
    actions = token.add_subparsers(dest="action", required=True)
    data_dir_help = f"the hub's data dir (default ./{HubConfig().data_dir}, env AGENTCOM_DATA_DIR)"

    create = actions.add_parser("create", help="print a new token for AGENT_ID")
    create.add_argument("agent_id", metavar="AGENT_ID")
    create.add_argument(
        "--role",
        choices=ROLES,
        default="agent",
        help="agent: its own tasks; viewer: reads everything, changes nothing; admin: everything",
    )
    create.add_argument("--data-dir", type=Path, help=data_dir_help)

    listing = actions.add_parser("list", help="agent ids, roles and token prefixes")
    listing.add_argument("--data-dir", type=Path, help=data_dir_help)

    revoke = actions.add_parser("revoke", help="revoke every token of AGENT_ID")
    revoke.add_argument("agent_id", metavar="AGENT_ID")
    revoke.add_argument("--data-dir", type=Path, help=data_dir_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    # stdout carries the token and nothing else; warnings (a data dir whose
    # permissions were tightened) go to stderr.
    configure_logging("warning")
    data_dir = args.data_dir or Path(os.environ.get("AGENTCOM_DATA_DIR", HubConfig().data_dir))
    conn = open_tokens_db(data_dir)
    tokens = TokenStore(conn)
    try:
        if args.action == "create":
            if not args.agent_id.strip():
                print("AGENT_ID must not be empty", file=sys.stderr)
                return 2
            if len(args.agent_id) > AGENT_ID_MAX_CHARS:
                print(f"AGENT_ID must be at most {AGENT_ID_MAX_CHARS} characters", file=sys.stderr)
                return 2
            print(tokens.create(args.agent_id, args.role, now_ms()))
        elif args.action == "list":
            for info in tokens.all().values():
                print(f"{info.agent_id}\t{info.role}\t{info.token_prefix}…")
        else:
            revoked = tokens.revoke(args.agent_id)
            if not revoked:
                print(f"no tokens for {args.agent_id}", file=sys.stderr)
                return 1
            print(f"revoked {revoked} token(s) of {args.agent_id}")
    except StorageFull:
        print(f"storage full: cannot write to {data_dir}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0
