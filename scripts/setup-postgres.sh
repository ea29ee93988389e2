#!/usr/bin/env bash
# Prepares a local PostgreSQL with pgvector for the constellation's tests and dev shards.
# Idempotent: starts the cluster if it is down, builds Debian's pgvector source when the
# `vector` extension is missing (bookworm does not package it), creates the database and
# the extension. Progress goes to stderr; the last line on stdout is the database URL, so
#   export OMEGA_DATABASE_URL="$(scripts/setup-postgres.sh)"
# works. Needs root for anything it has to install or start; a no-op run does not.
set -euo pipefail

DATABASE="${OMEGA_TEST_DATABASE:-omega_test}"
PORT="${PGPORT_OMEGA:-5432}"
URL="postgres://postgres@127.0.0.1:${PORT}/${DATABASE}"
ADMIN_URL="postgres://postgres@127.0.0.1:${PORT}/postgres"
# Debian's pgvector source lives in trixie; only its source is fetched, never its binaries.
PGVECTOR_SUITE="${PGVECTOR_SUITE:-trixie}"
SOURCES_FILE="/etc/apt/sources.list.d/omega-pgvector-src.sources"
# Keeps "already exists, skipping" notices out of the output.
export PGOPTIONS="-c client_min_messages=warning"

say() { printf 'setup-postgres: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
need_root() { is_root || die "$1 needs root (run as root or with sudo)"; }

apt_updated=""
apt_update() {
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq >&2
    apt_updated=1
  fi
}
apt_install() {
  need_root "installing $*"
  apt_update
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# 1. PostgreSQL itself.
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  say "PostgreSQL is not installed; installing Debian's postgresql"
  apt_install postgresql postgresql-contrib
fi
PG_MAJOR="$(ls /etc/postgresql | sort -n | tail -n 1)"
PG_BIN="/usr/lib/postgresql/${PG_MAJOR}/bin"
say "PostgreSQL ${PG_MAJOR} cluster 'main'"

if ! pg_isready -q -h 127.0.0.1 -p "$PORT"; then
  need_root "starting PostgreSQL"
  say "starting the cluster"
  pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main start >&2
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p "$PORT" || die "PostgreSQL did not come up on 127.0.0.1:${PORT}"
else
  say "already running on 127.0.0.1:${PORT}"
fi

# 2. Loopback connections without a password, as the URL above assumes (dev and CI only).
if ! psql "$ADMIN_URL" -qAtc "select 1" >/dev/null 2>&1; then
  need_root "allowing trusted loopback connections"
  hba="$(runuser -u postgres -- psql -qAtc "show hba_file")"
  say "adding trust rules for 127.0.0.1 and ::1 to ${hba}"
  {
    printf '# omega scripts/setup-postgres.sh: trust loopback connections (development and CI only)\n'
    printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
    cat "$hba"
  } >"${hba}.omega" && cat "${hba}.omega" >"$hba" && rm -f "${hba}.omega"
  pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main reload >&2
  psql "$ADMIN_URL" -qAtc "select 1" >/dev/null || die "cannot connect as ${ADMIN_URL}"
fi
admin() { psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qAtc "$1"; }

# 3. pgvector, built from Debian's source against this exact server.
if [ -n "$(admin "select 1 from pg_available_extensions where name = 'vector'")" ]; then
  say "pgvector already available ($(admin "select default_version from pg_available_extensions where name = 'vector'"))"
else
  need_root "building pgvector"
  started=$SECONDS
  server_version="$(dpkg-query -W -f='${Version}' "postgresql-${PG_MAJOR}")"
  say "pgvector is missing; building Debian's source for PostgreSQL ${server_version}"
  if [ ! -f "$SOURCES_FILE" ]; then
    say "adding a deb-src entry for ${PGVECTOR_SUITE} (${SOURCES_FILE})"
    cat >"$SOURCES_FILE" <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${PGVECTOR_SUITE}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  # The headers must match the running server; fall back to the candidate if that version is gone.
  dev="postgresql-server-dev-${PG_MAJOR}"
  apt_update
  if apt-cache madison "$dev" | awk '{print $3}' | grep -qxF "$server_version"; then
    apt_install build-essential dpkg-dev "${dev}=${server_version}"
  else
    say "warning: ${dev} ${server_version} is not in the archive; using the candidate version"
    apt_install build-essential dpkg-dev "$dev"
  fi
  work="$(mktemp -d /tmp/omega-pgvector.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
  say "fetching the pgvector source into ${work}"
  (cd "$work" && apt-get source -qq "pgvector/${PGVECTOR_SUITE}" >&2) || die "apt-get source pgvector failed"
  src="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)"
  [ -n "$src" ] || die "no pgvector source directory in ${work}"
  say "building $(basename "$src")"
  # OPTFLAGS="" drops -march=native so the library runs on any x86-64 this image moves to.
  make -C "$src" -j"$(nproc)" PG_CONFIG="${PG_BIN}/pg_config" OPTFLAGS="" >&2
  say "installing"
  make -C "$src" PG_CONFIG="${PG_BIN}/pg_config" OPTFLAGS="" install >&2
  rm -f "$SOURCES_FILE"
  [ -n "$(admin "select 1 from pg_available_extensions where name = 'vector'")" ] ||
    die "pgvector was installed but PostgreSQL does not list it"
  say "pgvector $(admin "select default_version from pg_available_extensions where name = 'vector'") installed in $((SECONDS - started)) s"
fi

# 4. The database and the extension.
if [ -z "$(admin "select 1 from pg_database where datname = '${DATABASE}'")" ]; then
  say "creating database ${DATABASE}"
  admin "create database \"${DATABASE}\""
else
  say "database ${DATABASE} exists"
fi
psql "$URL" -v ON_ERROR_STOP=1 -qAtc "create extension if not exists vector" >&2
say "vector $(psql "$URL" -qAtc "select extversion from pg_extension where extname = 'vector'") enabled in ${DATABASE}"
echo "$URL"
