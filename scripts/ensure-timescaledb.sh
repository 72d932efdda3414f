#!/usr/bin/env bash
# Make TimescaleDB loadable by this machine's PostgreSQL 15, so the suite can test the hypertable path.
#
# The extension is built once per machine from the vendored source (../shared/vendor, see its
# README) into a cache outside the clone, staged with DESTDIR, and copied into PostgreSQL's
# lib and extension directories. Later runs only copy (or find it already there).
# Never fatal: without the source or a compiler it says why and the TimescaleDB tests skip.
set -u
VERSION=2.28.3
PG_CONFIG=${PG_CONFIG:-$(ls /usr/lib/postgresql/15/bin/pg_config 2>/dev/null || command -v pg_config)}
CACHE=${VIGIL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil}/timescaledb-$VERSION-pg15
STAGE=$CACHE/stage
repo=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "$PG_CONFIG" ] || [ ! -x "$PG_CONFIG" ]; then
  echo "timescaledb: no pg_config for PostgreSQL 15; the TimescaleDB tests will skip" >&2
  exit 0
fi
sharedir=$("$PG_CONFIG" --sharedir)
pkglibdir=$("$PG_CONFIG" --pkglibdir)
if [ -f "$sharedir/extension/timescaledb--$VERSION.sql" ] && [ -f "$pkglibdir/timescaledb-$VERSION.so" ]; then
  exit 0
fi

if [ ! -f "$STAGE/.complete" ]; then
  tarball=""
  for dir in "${VIGIL_VENDOR_DIR:-}" "$repo/../shared/vendor" "$repo/../../shared/vendor" /work/shared/vendor; do
    if [ -n "$dir" ] && [ -f "$dir/timescaledb-$VERSION.tar.gz" ]; then
      tarball="$dir/timescaledb-$VERSION.tar.gz"
      break
    fi
  done
  if [ -z "$tarball" ]; then
    echo "timescaledb: timescaledb-$VERSION.tar.gz not found (set VIGIL_VENDOR_DIR); the TimescaleDB tests will skip" >&2
    exit 0
  fi
  if [ ! -f "$("$PG_CONFIG" --includedir-server)/postgres.h" ] || ! command -v cmake >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "timescaledb: installing the build dependencies with apt-get"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        postgresql-server-dev-15 cmake build-essential libssl-dev libkrb5-dev >/dev/null
    else
      echo "timescaledb: PostgreSQL server headers or cmake missing; the TimescaleDB tests will skip" >&2
      exit 0
    fi
  fi
  echo "timescaledb: building $VERSION once for this machine into $CACHE (about 5 minutes)"
  rm -rf "$CACHE/src" "$STAGE"
  mkdir -p "$CACHE/src"
  tar -xzf "$tarball" -C "$CACHE/src" || exit 0
  src=$(ls -d "$CACHE"/src/timescaledb-*/ | head -1)
  log=$CACHE/build.log
  if ! (cd "$src" && ./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
        -DPG_CONFIG="$PG_CONFIG" && make -C build -j"$(nproc)" && make -C build install DESTDIR="$STAGE") \
        >"$log" 2>&1; then
    echo "timescaledb: the build failed, see $log; the TimescaleDB tests will skip" >&2
    exit 0
  fi
  rm -rf "$CACHE/src"
  touch "$STAGE/.complete"
fi

if ! cp -r "$STAGE"/usr/. /usr/ 2>/dev/null; then
  echo "timescaledb: cannot copy the build into $pkglibdir (not root?); the TimescaleDB tests will skip" >&2
fi
exit 0
