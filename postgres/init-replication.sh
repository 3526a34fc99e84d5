# Lets streaming replicas (the optional read replicas, docs/DEPLOY.md "Read replicas") connect to
# this primary: a role with the REPLICATION attribute and the pg_hba line for it.
#
# The postgres image runs it once, when it initialises an empty data directory (compose and the
# k8s StatefulSet mount it in /docker-entrypoint-initdb.d/; the Akash HA SDL writes the same text
# there, tests/deploy compare them). On a server initialised before it was added, run it by hand:
#     docker compose exec postgres sh /docker-entrypoint-initdb.d/10-replication.sh
#     kubectl -n NAMESPACE exec postgres-0 -- sh /docker-entrypoint-initdb.d/10-replication.sh
# Running it again is harmless: the role's password is set again, the line is added once.
#
# The entrypoint sources this file (no `exit`, no `set`). From the environment: POSTGRES_USER,
# POSTGRES_DB, PGDATA (the image's), POSTGRES_REPLICATION_USER and POSTGRES_REPLICATION_PASSWORD.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set role="${POSTGRES_REPLICATION_USER:-replicator}" \
    --set password="$POSTGRES_REPLICATION_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH REPLICATION LOGIN PASSWORD :'password';
SQL
replication_line="host replication ${POSTGRES_REPLICATION_USER:-replicator} all scram-sha-256"
grep -qxF "$replication_line" "$PGDATA/pg_hba.conf" \
    || printf '%s\n' "$replication_line" >> "$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --command 'SELECT pg_reload_conf()' > /dev/null
