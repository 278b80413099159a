#!/bin/sh
# The container's start: provision the API token from a secret file (once; later
# starts leave it as it is), then become `orderlog serve` (exec: it is PID 1 and
# gets SIGTERM itself, so it answers what it received and finishes the orders in hand).
set -eu
if [ -n "${ORDERLOG_TOKEN_FILE:-}" ]; then
  orderlog token create --name "${ORDERLOG_TOKEN_NAME:-deploy}" \
    --scopes "${ORDERLOG_TOKEN_SCOPES:-admin}" \
    --secret-file "$ORDERLOG_TOKEN_FILE" --if-missing
fi
exec orderlog serve --host 0.0.0.0 "$@"
