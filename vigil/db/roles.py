"""Least privilege in the database: the migration role owns the schema; the application role
that every process connects as may read and write rows, and nothing more.

The application role gets ``SELECT, INSERT, UPDATE, DELETE`` on the tables and the use of their
sequences and functions; no DDL, no TRUNCATE, no ownership. The compliance log, its leaves and
its signed checkpoints are insert-only for it (rule A1), and the migration ledger read-only.
Storage upkeep that needs the owner's rights runs through ``SECURITY DEFINER`` functions
(ingest 0107). Grants are applied after every migration run, so new tables are covered.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from vigil.db.rows import first_value

APP_ROLE = "vigil_app"
# rule A1: the application appends to these and never changes them
INSERT_ONLY = ("compliance_log", "compliance_log_leaves", "compliance_checkpoints")
READ_ONLY = ("schema_migrations", "compliance_log_head")


def ensure_role(conn: psycopg.Connection, *, role: str, password: str) -> None:
    """Create a login role with this password (scram-sha-256), or set its password."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    conn.execute(
        sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(role), sql.Literal(password)
        )
    )


def grant_app_rights(conn: psycopg.Connection, *, role: str, schema: str = "public") -> None:
    """Give ``role`` the rights the application uses on every table of ``schema``, no more."""
    who, where = sql.Identifier(role), sql.Identifier(schema)
    database = conn.info.dbname
    for statement in (
        "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {who}",
        "REVOKE CREATE ON SCHEMA {where} FROM PUBLIC",
        "GRANT USAGE ON SCHEMA {where} TO {who}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {where} TO {who}",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {where} TO {who}",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {where} TO {who}",
        "REVOKE TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {where} FROM {who}",
    ):
        conn.execute(sql.SQL(statement).format(db=sql.Identifier(database), who=who, where=where))
    for table, kept in [(t, "SELECT, INSERT") for t in INSERT_ONLY] + [
        (t, "SELECT") for t in READ_ONLY
    ]:
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.{table}",))
        if not first_value(found.fetchone()):
            continue
        name = sql.Identifier(schema, table)
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(name, who))
        conn.execute(sql.SQL(f"GRANT {kept} ON {{}} TO {{}}").format(name, who))
