#!/bin/sh
# PostgreSQL for examples/docker-compose.ha.yml. The first start (an empty data volume)
# runs initdb with superuser $POSTGRES_USER (default leasehold) and the password from
# $POSTGRES_PASSWORD, creates the database of the same name, and allows password
# (scram-sha-256) logins over TCP from anywhere the network lets in; later starts reuse
# the data. Then it runs the server in the foreground.
set -eu
USER_NAME=${POSTGRES_USER:-leasehold}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
  umask 077
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$USER_NAME" --pwfile "$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 > /dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  # Local socket only while the database is created.
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/tmp" start > /dev/null
  createdb -h /tmp -U "$USER_NAME" "$USER_NAME"
  pg_ctl -D "$PGDATA" -w -m fast stop > /dev/null
  echo "postgres: initialized (superuser and database $USER_NAME)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
