#!/bin/sh
# PostgreSQL first-start script (docker-entrypoint-initdb.d): one role and one database per
# service, each role owning only its own database. Passwords come from mounted secret files
# (/run/secrets/postgres-<service>-password, made by `python -m deploy.make_secrets`).
set -eu
SECRETS_DIR="${RECEPT_SECRETS_DIR:-/run/secrets}"
PREFIX="${RECEPT_DB_PREFIX:-recept_}"
for service in ${RECEPT_SERVICES:?list the services, e.g. RECEPT_SERVICES="auth orders"}; do
    name="${PREFIX}${service}"
    password=$(cat "$SECRETS_DIR/postgres-${service}-password")
    # psql variables (:'pw', :"name") quote the values; nothing is pasted into SQL text.
    psql -v ON_ERROR_STOP=1 --no-psqlrc -q --username "${POSTGRES_USER:-postgres}" \
         --dbname "${POSTGRES_DB:-postgres}" -v name="$name" -v pw="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'pw';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
    echo "init-databases: database and role $name created"
done
