#!/bin/bash
# Benchmark shim, installed as /usr/local/bin/curl on the TypeScript pi's lab pod only: lab pods have no curl
# and no internet to install it. Enough of curl for the one call their `pi list` makes on the pod:
#   curl -s -f http://localhost:PORT/health > /dev/null   (exit 0 on 2xx/3xx, 22 on >= 400, 7 if refused)
# Pure bash (/dev/tcp), so it costs no more than the real curl would.
url=""
for a in "$@"; do case $a in http://*) url=$a ;; esac; done
[ -n "$url" ] || { echo "curl (bench shim): only http://HOST:PORT/PATH is supported" >&2; exit 2; }
hp=${url#http://}
path=/${hp#*/}
[ "$path" = "/$hp" ] && path=/
hp=${hp%%/*}
host=${hp%%:*}
port=${hp##*:}
[ "$port" = "$hp" ] && port=80
[ "$host" = localhost ] && host=127.0.0.1
exec 3<>"/dev/tcp/$host/$port" 2>/dev/null || exit 7
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$hp" >&3
read -r _ code _ <&3 || exit 52
cat <&3 >/dev/null
[[ $code =~ ^[0-9]+$ ]] && [ "$code" -lt 400 ] || exit 22
