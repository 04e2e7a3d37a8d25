#!/usr/bin/env bash
# Make PostgreSQL and MariaDB available to sessctl's tests, then print the lines that point the
# tests at them:
#
#   eval "$(scripts/test-databases.sh)"     # then: .venv/bin/python -m pytest
#
# prints (stdout, nothing else goes there)
#   export SESSCTL_TEST_POSTGRES=postgresql+psycopg://sessctl@127.0.0.1:5432/sessctl_test
#   export SESSCTL_TEST_MYSQL=mysql+pymysql://sessctl@127.0.0.1:3306/sessctl_test
#
# For each server, in this order, the first that works:
#   1. a URL you already exported in SESSCTL_TEST_POSTGRES / SESSCTL_TEST_MYSQL is kept as it is;
#   2. the user `sessctl` can already reach the database `sessctl_test` on 127.0.0.1: nothing
#      is changed (the usual case after the first run: about a tenth of a second);
#   3. as root on Debian/Ubuntu: install the server from the OS packages if it is missing, start
#      it if it is down, and create the user `sessctl` and the database `sessctl_test`. No server
#      setting is changed: PostgreSQL's user gets the password `sessctl` (test-only) and is
#      reached over 127.0.0.1 as the stock pg_hba.conf allows; MariaDB's user has none.
# A server it cannot provide is named on stderr with what to do, and its line is left out: the
# tests then run on SQLite and pytest's summary says loudly which backends were skipped.
# Exit status: 0, or 1 when a server is missing and CI=true (CI must test all three).
#
# Ports: PGPORT (default 5432) and MYSQL_TCP_PORT (default 3306); MariaDB's admin connection
# uses MYSQL_UNIX_PORT if set. Idempotent: run it as often as you like.
set -uo pipefail

PGPORT=${PGPORT:-5432}
MYSQL_TCP_PORT=${MYSQL_TCP_PORT:-3306}
export DEBIAN_FRONTEND=noninteractive
log() { echo "test-databases: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
missing=()
emit() { printf 'export %s=%q\n' "$1" "$2"; }  # quoted for eval, whatever the URL holds

# --- PostgreSQL ----------------------------------------------------------------------------
pg_url() { echo "postgresql+psycopg://sessctl$1@127.0.0.1:$PGPORT/sessctl_test"; }

pg_works() {  # $1: "" or ":password"; true if sessctl can run a query in sessctl_test
  have psql || return 1
  PGCONNECT_TIMEOUT=3 psql -w -X -Atq "postgresql://sessctl$1@127.0.0.1:$PGPORT/sessctl_test" \
    -c 'select 1' >/dev/null 2>&1
}

pg_up() {
  if have pg_isready; then pg_isready -q -h 127.0.0.1 -p "$PGPORT"; else (exec 3<>"/dev/tcp/127.0.0.1/$PGPORT") 2>/dev/null; fi
}

pg_provide() {  # as root: install, start, create the user and database
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    have apt-get || { log "PostgreSQL is not installed and this is not a Debian/Ubuntu system"; return 1; }
    log "installing PostgreSQL from the OS packages (apt-get install postgresql)"
    apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends postgresql >&2 || return 1
  fi
  if ! pg_up; then
    local ver cluster
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    cluster=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PGPORT" '$3==p {print $1"/"$2; exit}')
    if [ -z "$cluster" ]; then  # none on this port: a new one ('main' unless that is taken)
      local name=main
      [ -d "/etc/postgresql/$ver/main" ] && name=sessctl_test
      log "creating the PostgreSQL $ver cluster '$name' on port $PGPORT"
      pg_createcluster -p "$PGPORT" "$ver" "$name" >&2 || return 1
      cluster="$ver/$name"
    fi
    log "starting PostgreSQL $cluster"
    pg_ctlcluster --skip-systemctl-redirect "${cluster%/*}" "${cluster#*/}" start >&2 || return 1
    for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
    pg_up || { log "PostgreSQL $cluster did not come up (see /var/log/postgresql/)"; return 1; }
  fi
  # The server's own superuser over its local socket (peer authentication, Debian's default).
  local admin=(runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -qAt -p "$PGPORT")
  if [ "$("${admin[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'sessctl'")" != 1 ]; then
    log "creating the PostgreSQL user sessctl (password: sessctl)"
    "${admin[@]}" -c "CREATE ROLE sessctl LOGIN CREATEDB PASSWORD 'sessctl'" >&2 || return 1
  fi
  if [ "$("${admin[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'sessctl_test'")" != 1 ]; then
    log "creating the PostgreSQL database sessctl_test"
    "${admin[@]}" -c "CREATE DATABASE sessctl_test OWNER sessctl" >&2 || return 1
  fi
}

want_postgres() {
  if [ -n "${SESSCTL_TEST_POSTGRES:-}" ]; then
    log "PostgreSQL: keeping SESSCTL_TEST_POSTGRES from the environment"
    emit SESSCTL_TEST_POSTGRES "$SESSCTL_TEST_POSTGRES"; return 0
  fi
  local password
  for password in "" ":sessctl"; do
    pg_works "$password" && { emit SESSCTL_TEST_POSTGRES "$(pg_url "$password")"; return 0; }
  done
  if is_root; then
    pg_provide
    for password in "" ":sessctl"; do
      pg_works "$password" && { emit SESSCTL_TEST_POSTGRES "$(pg_url "$password")"; return 0; }
    done
    log "PostgreSQL: the user sessctl cannot log in to sessctl_test on 127.0.0.1:$PGPORT" \
        "(an existing user with another password, or pg_hba.conf refuses it)"
  else
    log "PostgreSQL: no database sessctl_test on 127.0.0.1:$PGPORT that the user sessctl can use;" \
        "run this script as root (it installs/starts PostgreSQL and creates both)," \
        "or export SESSCTL_TEST_POSTGRES=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
  fi
  missing+=(PostgreSQL)
}

# --- MariaDB / MySQL -----------------------------------------------------------------------
my_url() { echo "mysql+pymysql://sessctl@127.0.0.1:$MYSQL_TCP_PORT/sessctl_test"; }

my_works() {
  local client
  client=$(command -v mariadb || command -v mysql) || return 1
  "$client" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$MYSQL_TCP_PORT" -u sessctl \
    --connect-timeout=3 -N -B -e 'select 1' sessctl_test >/dev/null 2>&1
}

my_admin() {  # root over the local socket (unix_socket authentication, Debian's default)
  local client
  client=$(command -v mariadb || command -v mysql) || return 1
  "$client" --no-defaults --protocol=socket ${MYSQL_UNIX_PORT:+--socket="$MYSQL_UNIX_PORT"} -u root "$@"
}

my_provide() {
  if [ ! -x /usr/sbin/mariadbd ] && [ ! -x /usr/sbin/mysqld ]; then
    have apt-get || { log "MariaDB is not installed and this is not a Debian/Ubuntu system"; return 1; }
    log "installing MariaDB from the OS packages (apt-get install mariadb-server)"
    apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >&2 || return 1
  fi
  if ! my_admin -e 'select 1' >/dev/null 2>&1; then
    log "starting MariaDB"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null
    service mariadb start >&2 2>&1 \
      || start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql >&2
    for _ in $(seq 1 60); do my_admin -e 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
    my_admin -e 'select 1' >/dev/null 2>&1 || { log "MariaDB did not come up (see /var/log/mysql/)"; return 1; }
  fi
  # The tests create tables (and, for per-database settings, databases of their own).
  my_admin >&2 <<'SQL'
CREATE DATABASE IF NOT EXISTS sessctl_test CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'sessctl'@'localhost';
CREATE USER IF NOT EXISTS 'sessctl'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'sessctl'@'localhost';
GRANT ALL PRIVILEGES ON *.* TO 'sessctl'@'127.0.0.1';
SQL
}

want_mysql() {
  if [ -n "${SESSCTL_TEST_MYSQL:-}" ]; then
    log "MariaDB: keeping SESSCTL_TEST_MYSQL from the environment"
    emit SESSCTL_TEST_MYSQL "$SESSCTL_TEST_MYSQL"; return 0
  fi
  my_works && { emit SESSCTL_TEST_MYSQL "$(my_url)"; return 0; }
  if is_root; then
    my_provide
    my_works && { emit SESSCTL_TEST_MYSQL "$(my_url)"; return 0; }
    log "MariaDB: the user sessctl cannot log in to sessctl_test on 127.0.0.1:$MYSQL_TCP_PORT"
  else
    log "MariaDB: no database sessctl_test on 127.0.0.1:$MYSQL_TCP_PORT that the user sessctl can use;" \
        "run this script as root (it installs/starts MariaDB and creates both)," \
        "or export SESSCTL_TEST_MYSQL=mysql+pymysql://USER:PASSWORD@HOST:PORT/DATABASE"
  fi
  missing+=(MariaDB)
}

want_postgres
want_mysql
if [ ${#missing[@]} -gt 0 ]; then
  log "not available: ${missing[*]}; the tests will skip them (pytest's summary says so)"
  case "${CI:-}" in true|1|yes) log "CI=$CI: every backend must be tested"; exit 1 ;; esac
fi
exit 0
