#!/usr/bin/env bash
# count-run.sh BIN TAG: BIN under callgrind on the held set-up; counts of a
# wrk -t1 -c1 -d8s and a -c32 -d8s run, per request.
# /tmp/rwb/conf-path: the held harness config copied with network_isolation = false and require_landlock = false; /tmp/rwb/key: the rwk_ key the harness printed.
set -euo pipefail
BIN=$1; TAG=$2
OUT=/work/main/bench-results/2026-12-05-proxy-alloc
CONF=$(cat /tmp/rwb/conf-path)
KEY=$(cat /tmp/rwb/key)
URL=http://127.0.0.1:47100/i/bench/bench
H="Authorization: Bearer $KEY"
cd /tmp/rwb
rm -f /tmp/rwb/cg-$TAG.out*
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/rwb/cg-$TAG.out \
    "$BIN" --config "$CONF" serve >/tmp/rwb/vg-$TAG.out 2>/tmp/rwb/vg-$TAG.err &
VG=$!
echo $VG >/tmp/rwb/vg-$TAG.pid
for _ in $(seq 600); do grep -q '^Redwall is listening on' /tmp/rwb/vg-$TAG.out && break; sleep 0.5; done
grep -q '^Redwall is listening on' /tmp/rwb/vg-$TAG.out || { echo "not listening"; exit 1; }
for _ in $(seq 120); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "$H" $URL) == 200 ]] && break
    sleep 1
done
[[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H "$H" $URL) == 200 ]] || { echo "no 200"; exit 1; }
wrk -t1 -c1 -d3s -H "$H" $URL >/dev/null
callgrind_control -i on $VG >/dev/null
wrk -t1 -c1 -d3s -H "$H" $URL >/dev/null
wrk -t1 -c32 -d3s -H "$H" $URL >/dev/null
for c in 1 32; do
    callgrind_control -z $VG >/dev/null
    wrk -t1 -c$c -d8s -H "$H" $URL >$OUT/wrk-$TAG-c$c.txt
    callgrind_control -d $VG >/dev/null
    sleep 1
    if grep -q 'Non-2xx\|Socket errors' $OUT/wrk-$TAG-c$c.txt; then echo "ERRORS in wrk-$TAG-c$c"; fi
    reqs=$(awk '/requests in/ {print $1}' $OUT/wrk-$TAG-c$c.txt)
    dump=$(ls -t /tmp/rwb/cg-$TAG.out.* | head -1)
    cp "$dump" /tmp/rwb/keep-cg-$TAG-c$c.out
    python3 /tmp/rwb/cgcount.py "$dump" "$reqs" "$TAG-c$c" | tee -a $OUT/callgrind-per-request.txt
done
kill -TERM $VG
wait $VG || true
