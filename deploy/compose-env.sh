#!/bin/sh
# Prints a fresh set of secrets for docker-compose.yml in .env format:
#
#   (umask 077 && deploy/compose-env.sh > .env)
#
# .env sits next to docker-compose.yml, where compose reads it; it must never be committed.
# Values are random: a 32-byte master key (version 1), a service token and MySQL passwords
# (hex, so they need no escaping inside KEYMESH_DATABASE_URL).
set -eu

if command -v openssl >/dev/null 2>&1; then
  base64_bytes() { openssl rand -base64 "$1"; }
  hex_bytes() { openssl rand -hex "$1"; }
elif command -v node >/dev/null 2>&1; then
  base64_bytes() { node -e "process.stdout.write(require('node:crypto').randomBytes($1).toString('base64') + '\n')"; }
  hex_bytes() { node -e "process.stdout.write(require('node:crypto').randomBytes($1).toString('hex') + '\n')"; }
else
  echo "compose-env.sh: needs openssl or node to generate random values" >&2
  exit 1
fi

cat <<ENV
# keymesh secrets for docker compose, generated $(date -u +%Y-%m-%dT%H:%M:%SZ). Do not commit.
KEYMESH_MASTER_KEYS=1:$(base64_bytes 32)
KEYMESH_SERVICE_TOKEN=$(hex_bytes 32)
MYSQL_PASSWORD=$(hex_bytes 24)
MYSQL_ROOT_PASSWORD=$(hex_bytes 24)
ENV
