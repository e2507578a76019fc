"""``meshplan db upgrade|downgrade|current`` and ``meshplan apikey create|list|revoke``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from service.cli.common import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    CLIError,
    load_settings,
    open_database,
    setup_logging,
    table,
)

if TYPE_CHECKING:
    from service.db.engine import Database


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="database migrations",
                        description="Migrate the database in MESHPLAN_DATABASE_URL (default: the "
                        "embedded SQLite file).")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="migrate to the latest revision (or REVISION)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)
    down = db_sub.add_parser("downgrade", help="migrate back to REVISION ('base' = empty)")
    down.add_argument("revision")
    down.set_defaults(func=cmd_db_downgrade)
    cur = db_sub.add_parser("current", help="print the database's revision; exit 1 when it "
                            "is not the latest")
    cur.set_defaults(func=cmd_db_current)

    keys = sub.add_parser("apikey", help="API keys (for MESHPLAN_AUTH=1)",
                          description="Create, list and revoke API keys in the database.")
    keys_sub = keys.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name", help="who or what the key is for")
    create.set_defaults(func=cmd_apikey_create)
    lst = keys_sub.add_parser("list", help="list keys (never the secrets)")
    lst.set_defaults(func=cmd_apikey_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_apikey_revoke)


def _db_command(*, log: bool = False) -> Database:
    settings = load_settings()
    if log:  # Alembic reports each migration it runs at info level
        setup_logging(settings, migrations=True)
    return open_database(settings)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from service.db import migrate

    return _migrate("upgrade", lambda db: migrate.upgrade(db, args.revision))


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from service.db import migrate

    return _migrate("downgrade", lambda db: migrate.downgrade(db, args.revision))


def _migrate(verb: str, run: Any) -> int:
    """Run one migration command on the configured database and print where it ends."""
    from service.db import migrate

    db = _db_command(log=True)
    try:
        run(db)
        print(f"{db.safe_url()}: at revision {migrate.current(db) or 'base (empty)'}")
    except Exception as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: {verb} of {db.safe_url()} failed: {exc}"
                       ) from None
    finally:
        db.dispose()
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace) -> int:
    from service.db import migrate

    db = _db_command()
    try:
        current, head = migrate.current(db), migrate.head()
    except Exception as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: cannot read {db.safe_url()}: {exc}") from None
    finally:
        db.dispose()
    if current == head:
        print(f"{current} (latest)")
        return EXIT_OK
    print(f"{current or 'base (empty)'} (latest is {head}: run `meshplan db upgrade`)")
    return EXIT_ERROR


def _keys_session(fn: Any) -> Any:
    db = _db_command()
    try:
        with db.session() as session:
            return fn(session)
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: {db.safe_url()}: {exc} (is it migrated? "
                       "`meshplan db upgrade`)") from None
    finally:
        db.dispose()


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from service.auth import service

    def create(session: Any) -> Any:
        try:
            return service.create_key(session, args.name)
        except ValueError as exc:
            raise CLIError(EXIT_INVALID, f"meshplan: {exc}") from None

    created = _keys_session(create)
    print(created.token)
    print(f"created API key {created.key.id} ({created.key.name}); the key above is shown "
          "only now: store it as a secret", file=sys.stderr)
    return EXIT_OK


def cmd_apikey_list(args: argparse.Namespace) -> int:
    from service.auth import service

    rows = _keys_session(lambda s: [
        (str(k.id), k.name, k.prefix + "…", k.created_at.isoformat(timespec="seconds"),
         k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-")
        for k in service.list_keys(s)])
    table(("id", "name", "key", "created", "revoked"), rows, sys.stdout)
    return EXIT_OK


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    from service.auth import service
    from service.exceptions import NotFound

    def revoke(session: Any) -> str:
        try:
            return str(service.revoke_key(session, args.id).name)
        except NotFound as exc:
            raise CLIError(EXIT_INVALID, f"meshplan: {exc}") from None

    name = _keys_session(revoke)
    print(f"revoked API key {args.id} ({name})")
    return EXIT_OK
