#!/usr/bin/env bash
# Make sure the Mosquitto, PostgreSQL and NATS binaries Vigil runs privately are installed.
# Installs them with apt-get when missing and possible; otherwise says what is missing.
set -u
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto mosquitto-clients)
# the clustered broker path (ingest/jetstream.py) and its tests: Debian's nats-server (2.9+)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql postgresql-contrib)
# the console's browser test drives Debian's Chromium (never a downloaded browser build): only
# the tests need it (`make test` passes --browser), not `make demo`
if [ "${1:-}" = "--browser" ]; then
  [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || need+=(chromium)
  # a Chinese font, so that the console's zh-CN screenshots show characters, not boxes
  [ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || need+=(fonts-wqy-zenhei)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing ${need[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts these services on install; Vigil runs its own private instances.
else
  echo "warning: missing ${need[*]} and cannot apt-get install them; set VIGIL_TEST_DATABASE_URL / VIGIL_TEST_MQTT_URL" >&2
fi
exit 0
