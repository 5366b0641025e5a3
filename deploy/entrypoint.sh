#!/bin/sh
# Container entrypoint: turn mounted secret files named like RECEPT_* variables into those
# variables, then run the command (gunicorn, a worker, or a migration).
#
# Secret settings (database and broker URLs hold passwords) arrive as files under
# /run/secrets, never in the image or in docker-compose.yml / a ConfigMap; shared.config reads
# the environment, so the files are exported here, just before the process starts.
set -eu
SECRETS_DIR="${RECEPT_SECRETS_DIR:-/run/secrets}"
if [ -d "$SECRETS_DIR" ]; then
    for file in "$SECRETS_DIR"/RECEPT_*; do
        [ -f "$file" ] || continue
        name=$(basename "$file")
        case "$name" in
            *[!A-Z0-9_]*) echo "entrypoint: ignoring $name (not a variable name)" >&2; continue ;;
        esac
        # $(cat) drops only trailing newlines, which an editor or `echo` may have added.
        value=$(cat "$file")
        export "$name=$value"
    done
fi
exec "$@"
