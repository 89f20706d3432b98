#!/usr/bin/env bash
# The agent's idle memory with its embedded site broker (issue: the site
# broker), the way part 1 of scripts/bench-agent measures it: enrol a
# release `redwall-agent` with a `redwall serve`, connect, then VmRSS every
# second for HOLD seconds while it only heartbeats. Twice with the same
# binary: without site-broker.toml, then with it (the main process and the
# `redwall-agent site-broker` child measured separately). The site broker
# listens on 127.0.0.1:$((PORT+1)), never the machine's 1883.
#
#   bench-results/2026-12-05-site-broker/measure.sh > agent-rss.txt
#
# Knobs: HOLD (20), HEARTBEAT (15), PORT (24500), AGENT (the agent binary,
# default the release build), SITE_BROKER (1; 0 skips the second run, for
# a build without the site broker), REDWALL (the hub binary,
# default the debug build: the hub's build does not change the agent's
# memory).
set -euo pipefail
cd "$(dirname "$0")/../.."
HOLD="${HOLD:-20}"
HEARTBEAT="${HEARTBEAT:-15}"
PORT="${PORT:-24500}"
target="${CARGO_TARGET_DIR:-target}"
redwall="${REDWALL:-$target/debug/redwall}"
agent="${AGENT:-$target/release/redwall-agent}"
work="$(mktemp -d)"
chmod 755 "$work"
cleanup() {
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "${hub_pid:-}" ] && kill "$hub_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/redwall.toml" <<EOF
data_dir = "$work/hub"
[server]
listen = "127.0.0.1:$PORT"
[passwords]
memory_kib = 1024
iterations = 1
parallelism = 1
[instances]
install_at_start = false
[broker]
enabled = false
[agents]
heartbeat_secs = $HEARTBEAT
EOF
"$redwall" serve --config "$work/redwall.toml" > "$work/hub.out" 2> "$work/hub.log" &
hub_pid=$!
base="https://127.0.0.1:$PORT"
for _ in $(seq 1 300); do
  curl -ks "$base/healthz" >/dev/null 2>&1 && grep -q 'rws_' "$work/hub.out" && break
  sleep 0.1
done
setup_token="$(grep -o 'rws_[A-Za-z0-9_-]*' "$work/hub.out" | head -1)"
password="violet-harbor-copper-9"
curl -ksf "$base/api/v1/setup" -H 'content-type: application/json' \
  -d "{\"setup_token\":\"$setup_token\",\"username\":\"admin\",\"password\":\"$password\"}" >/dev/null
login="$(curl -ksf -c "$work/cookies" "$base/api/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}")"
csrf="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["csrf_token"])' "$login")"
call() { curl -ksf -b "$work/cookies" -H "x-csrf-token: $csrf" -H "origin: $base" -H 'content-type: application/json' "$@"; }
team="$(call "$base/api/v1/teams" -d '{"name":"Bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
pat="$(call "$base/api/v1/me/tokens" -d '{"name":"bench","scope":"full"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
REDWALL_TOKEN="$pat" "$redwall" agent provision --url "$base" --insecure-skip-verify --team "$team" \
  > "$work/bundle.txt" 2>/dev/null
"$agent" enrol --name bench-1 --bundle "@$work/bundle.txt" --dir "$work/agent" >/dev/null

wait_online() {
  for _ in $(seq 1 100); do
    if REDWALL_TOKEN="$pat" "$redwall" agent list --url "$base" --insecure-skip-verify --team "$team" --json \
        | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)[0]["online"] else 1)'; then
      return 0
    fi
    sleep 0.1
  done
  echo "the agent did not come online:"; cat "$work/agent.log"; exit 1
}

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "-"; }
# RssAnon, RssFile (the executable's pages read or relocated), RssShmem.
# Pss: the process's share of its pages (the agent and its child share
# the executable's pages: one binary).
parts() {
  awk '/^Rss(Anon|File|Shmem)/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/status"
  awk '/^(Pss|Pss_Anon|Pss_File):/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/smaps_rollup"
  echo
}

summary() {
  python3 - "$@" <<'PY'
import statistics, sys
for label, path, col in [a.split(":") for a in sys.argv[1:]]:
    vals = [int(l.split()[int(col)]) for l in open(path) if l[0].isdigit()]
    print(f"# {label}: median {statistics.median(vals)/1024:.1f} MiB, max {max(vals)/1024:.1f} MiB")
PY
}

echo "# redwall-agent (release) idle RSS, connected, heartbeat ${HEARTBEAT}s"
echo "# date: $(date -u +%FT%TZ)  machine: $(nproc) cores, $(uname -r)  binary: $(stat -c %s "$agent") bytes"

# 1. Without site-broker.toml.
REDWALL_AGENT_LOG=warn "$agent" run --dir "$work/agent" 2> "$work/agent.log" &
agent_pid=$!
wait_online
sleep 2
{
  echo "## without site-broker.toml"
  echo "# second agent_vmrss_kib"
  for i in $(seq 1 "$HOLD"); do echo "$i $(rss "$agent_pid")"; sleep 1; done
  echo "# agent VmHWM_kib $(awk '/^VmHWM/ {print $2}' "/proc/$agent_pid/status") threads $(awk '/^Threads/ {print $2}' "/proc/$agent_pid/status")"
  echo "# agent $(parts "$agent_pid")"
} > "$work/a.txt"
cat "$work/a.txt"
summary "agent without site broker:$work/a.txt:1"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true

[ "${SITE_BROKER:-1}" = 0 ] && exit 0

# 2. With site-broker.toml (defaults but the port).
echo "listen = [\"127.0.0.1:$((PORT+1))\"]" > "$work/agent/site-broker.toml"
REDWALL_AGENT_LOG=warn "$agent" run --dir "$work/agent" 2> "$work/agent.log" &
agent_pid=$!
wait_online
child=""
for _ in $(seq 1 100); do
  child="$(pgrep -P "$agent_pid" -f 'site-broker' || true)"
  [ -n "$child" ] && break
  sleep 0.1
done
[ -n "$child" ] || { echo "no site broker child:"; cat "$work/agent.log"; exit 1; }
sleep 2
{
  echo "## with site-broker.toml (child pid $child, uid $(awk '/^Uid/ {print $2}' "/proc/$child/status"))"
  echo "# second agent_vmrss_kib site_broker_vmrss_kib"
  for i in $(seq 1 "$HOLD"); do echo "$i $(rss "$agent_pid") $(rss "$child")"; sleep 1; done
  echo "# agent VmHWM_kib $(awk '/^VmHWM/ {print $2}' "/proc/$agent_pid/status") threads $(awk '/^Threads/ {print $2}' "/proc/$agent_pid/status")"
  echo "# site broker VmHWM_kib $(awk '/^VmHWM/ {print $2}' "/proc/$child/status") threads $(awk '/^Threads/ {print $2}' "/proc/$child/status")"
  echo "# agent $(parts "$agent_pid")"
  echo "# site broker $(parts "$child")"
} > "$work/b.txt"
cat "$work/b.txt"
summary "agent with site broker:$work/b.txt:1" "site broker child:$work/b.txt:2"
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
sleep 0.5
if [ -d "/proc/$child" ] && ! grep -q '^State:.*Z' "/proc/$child/status" 2>/dev/null; then
  echo "# the site broker outlived the agent"; exit 1
fi
echo "# the site broker ended with the agent"
