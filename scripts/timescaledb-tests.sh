#!/usr/bin/env bash
# The storage tests again, on private PostgreSQL servers that load TimescaleDB (the hypertable
# path). Skipped, saying why, when scripts/ensure-timescaledb.sh could not install it.
set -euo pipefail
python=${1:-.venv/bin/python}
pg_config=$(ls /usr/lib/postgresql/15/bin/pg_config 2>/dev/null || command -v pg_config || true)
if [ -z "$pg_config" ] || [ ! -f "$("$pg_config" --sharedir)/extension/timescaledb.control" ]; then
  echo "TimescaleDB is not installed: the TimescaleDB storage tests did not run" >&2
  exit 0
fi
echo "storage tests on TimescaleDB:"
VIGIL_TEST_TIMESCALEDB=1 "$python" -m pytest -q -p no:cacheprovider \
  tests/test_db.py tests/test_db_roles.py tests/ingest tests/api/test_api_assets.py
