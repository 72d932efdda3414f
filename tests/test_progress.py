"""Long command-line work shows progress on a terminal and stays quiet when piped."""

from __future__ import annotations

import os
import pty
import subprocess
import sys


def _migrate(url: str, *, terminal: bool) -> tuple[int, str, str]:
    """``vigil db migrate`` with stderr on a pseudo-terminal or a pipe: (rc, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_DATABASE_URL"] = url
    command = [sys.executable, "-m", "runtime.cli", "db", "migrate"]
    if not terminal:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=follower, text=True
        )
        os.close(follower)
        follower = -1
        shown = bytearray()
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end closed: the process is done with it
                break
            if not chunk:
                break
            shown.extend(chunk)
        out, _ = process.communicate(timeout=300)
        return process.returncode, out, shown.decode(errors="replace")
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_migrate_shows_a_bar_on_a_terminal_and_nothing_when_piped(empty_db_url, postgres_admin_url):
    import psycopg

    rc, out, err = _migrate(empty_db_url, terminal=True)
    assert rc == 0, err
    assert "migrating" in err and "migration" in err  # the bar, with its unit
    assert "applied" in out
    # a second empty database, its stderr piped: the same work, no bar
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS vigil_progress_piped")
        conn.execute("CREATE DATABASE vigil_progress_piped")
    piped_url = empty_db_url.rsplit("/", 1)[0] + "/vigil_progress_piped"
    try:
        rc, out, err = _migrate(piped_url, terminal=False)
        assert rc == 0, err
        assert "applied" in out
        assert "migrating" not in err and "\r" not in err
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS vigil_progress_piped WITH (FORCE)")
