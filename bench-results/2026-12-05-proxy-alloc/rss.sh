#!/usr/bin/env bash
# rss.sh BIN TAG: VmRSS of a fresh `redwall serve` (loopback, SQLite, TLS off),
# idle after start, and idle after first-run setup and one login (two argon2id hashes).
set -euo pipefail
BIN=$1; TAG=$2; PORT=${PORT:-47190}
D=$(mktemp -d /tmp/rwrss.XXXXXX)
mkdir -p $D/data
cat >$D/config.toml <<C
data_dir = "$D/data"
[server]
listen = "127.0.0.1:$PORT"
[tls]
mode = "off"
[log]
level = "warn"
C
env -u REDWALL_CONFIG "$BIN" --config $D/config.toml serve >$D/out 2>$D/err &
P=$!
for _ in $(seq 300); do grep -q '^Redwall is listening on' $D/out && break; sleep 0.1; done
sleep 3
r0=$(awk '/^VmRSS:/ {print $2}' /proc/$P/status)
setup=$(grep -o '"setup_token":"rws_[^"\\]*' $D/out | head -n1 | cut -d'"' -f4)
B=http://127.0.0.1:$PORT
curl -sS -o /dev/null --max-time 60 -H 'Content-Type: application/json' -X POST $B/api/v1/setup \
  -d "{\"setup_token\":\"$setup\",\"username\":\"rssadmin\",\"password\":\"violet-harbor-copper-9\"}"
curl -sS -o /dev/null --max-time 60 -H 'Content-Type: application/json' -X POST $B/api/v1/auth/login \
  -d '{"username":"rssadmin","password":"violet-harbor-copper-9"}'
sleep 3
r1=$(awk '/^VmRSS:/ {print $2}' /proc/$P/status)
kill -TERM $P; wait $P || true
rm -rf $D
echo "$TAG idle_after_start_kB=$r0 idle_after_setup_and_login_kB=$r1"
