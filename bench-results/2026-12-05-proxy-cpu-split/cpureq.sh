#!/bin/bash
# cpureq.sh NAME URL "PIDS" [HEADER] [CONNS] : user and system CPU µs per request over a 8 s wrk run
name=$1; url=$2; pids=$3; hdr=${4:-X-Bench: 1}; c=${5:-1}
ticks() { local u=0 s=0; for p in $pids; do read -r a b < <(awk '{print $14, $15}' /proc/$p/stat); u=$((u+a)); s=$((s+b)); done; echo "$u $s"; }
read -r u0 s0 <<<"$(ticks)"
out=$(wrk -t1 -c$c -d8s -H "$hdr" "$url")
read -r u1 s1 <<<"$(ticks)"
rate=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
awk -v n="$name" -v r="$rate" -v u=$((u1-u0)) -v s=$((s1-s0)) -v c=$c 'BEGIN {printf "%-8s c=%-2s %7.0f req/s  user %5.1f us/req  sys %5.1f us/req  total %5.1f\n", n, c, r, u*1e4/(r*8), s*1e4/(r*8), (u+s)*1e4/(r*8)}'
