#!/bin/bash
# quorate-readyz [HOST:PORT] — the container healthcheck: exits 0 when quorate's GET /readyz
# answers 200 (quorate is up and its database reachable), non-zero otherwise.
# The runtime image has no curl: one HTTP/1.0 request over bash's /dev/tcp is enough.
set -euo pipefail
addr=${1:-127.0.0.1:8080}
host=${addr%:*}
port=${addr##*:}
exec 3<>"/dev/tcp/$host/$port"
printf 'GET /readyz HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
IFS= read -r -t 5 status <&3
[[ $status == "HTTP/1."?" 200 "* ]]
