#!/usr/bin/env bash
# shim-split-monitor.sh [LOG] -- watches containerd's shim sockets while a
# load runs (stop it with Ctrl-C or kill). Every 0.2 s it lists the
# processes listening on /run/containerd/s/*; it logs each new listener,
# and "SPLIT" whenever two live processes listen on one path: a shim group
# whose socket a second shim took over (docs/performance.md, "Why grouped
# creates failed"). `grep -c SPLIT LOG` afterwards: 0 is what nsn-shim
# should give.
set -u
out=${1:-/tmp/shim-split-monitor.log}
: > "$out"
declare -A seen
while :; do
  now=$(ss -xlpH 2>/dev/null | awk '$5 ~ /\/run\/containerd\/s\// {print $5, $0}' |
    sed -nE 's/^(\S+) .*pid=([0-9]+).*/\1 \2/p' | sort -u)
  while read -r path pid; do
    [ -n "$pid" ] || continue
    if [ -z "${seen["$path $pid"]:-}" ]; then
      seen["$path $pid"]=1
      echo "$(date +%T.%N | cut -c1-12) listen $path pid=$pid $(tr '\0' ' ' 2>/dev/null </proc/"$pid"/cmdline | grep -o -- '-id [^ ]*')" >> "$out"
    fi
  done <<< "$now"
  awk '{print $1}' <<< "$now" | sort | uniq -d | while read -r p; do
    [ -n "$p" ] && echo "$(date +%T.%N | cut -c1-12) SPLIT $p: $(grep "^$p " <<< "$now" | awk '{print $2}' | tr '\n' ' ')" >> "$out"
  done
  sleep 0.2
done
