#!/bin/sh
# The container's start: provision the API token from a secret file (once; later
# starts leave it as it is), then become `orderlog serve` (exec: it is PID 1 and
# gets SIGTERM itself, so it answers what it received and finishes the orders in hand).
#
# Arguments: none, or flags for serve (`docker run IMAGE --processes 2`); or another
# orderlog command, which runs instead against the same database
# (`docker run --rm -v orderlog-data:/data IMAGE token create --name admin --scopes admin`);
# or any other program (`docker run -it IMAGE sh`).
set -eu

# One line on stderr saying what is wrong and what to do, then exit: a container that
# restarts shows the same line each time instead of a trace.
refuse() {
  echo "orderlog-entrypoint: $*" >&2
  exit 2
}

case "${1:--}" in
  -*) ;;
  serve) shift ;;
  token | backup | rebuild) exec orderlog "$@" ;;
  *) exec "$@" ;;
esac

if [ -n "${ORDERLOG_TOKEN_FILE:-}" ]; then
  if [ ! -e "$ORDERLOG_TOKEN_FILE" ]; then
    refuse "the token file $ORDERLOG_TOKEN_FILE (ORDERLOG_TOKEN_FILE) does not exist:" \
      "mount the secret there, or unset ORDERLOG_TOKEN_FILE"
  fi
  if [ ! -r "$ORDERLOG_TOKEN_FILE" ]; then
    refuse "the token file $ORDERLOG_TOKEN_FILE is not readable by uid $(id -u):" \
      "a secret file is mounted with its owner and mode on the host, so make it readable" \
      "to others there (e.g. chmod 644 deploy/orderlog_token; under umask 077 it is 600)"
  fi
  orderlog token create --name "${ORDERLOG_TOKEN_NAME:-deploy}" \
    --scopes "${ORDERLOG_TOKEN_SCOPES:-admin}" \
    --secret-file "$ORDERLOG_TOKEN_FILE" --if-missing
fi
exec orderlog serve --host 0.0.0.0 "$@"
