#!/usr/bin/env bash
# Install PostgreSQL 15 + PL/Python and build pgvector from Debian's own source package.
# Idempotent: every step checks first and does nothing when its result is already there.
set -euo pipefail

PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/${PG_MAJOR}/bin
PG_CONFIG=${PG_BIN}/pg_config
CACHE_DIR=${FASTEMBED_EXT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fastembed_ext/pgvector}
SRC_LIST=/etc/apt/sources.list.d/fastembed_ext-src.sources
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { printf 'setup_postgres: %s\n' "$*" >&2; }

# 1. Debian packages
need=()
for pkg in postgresql-${PG_MAJOR} postgresql-plpython3-${PG_MAJOR} postgresql-server-dev-${PG_MAJOR} dpkg-dev build-essential; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        need+=("$pkg")
    fi
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# 2. pgvector, built from Debian's source package (not packaged for bookworm)
SHAREDIR=$("$PG_CONFIG" --sharedir)
if [ -f "$SHAREDIR/extension/vector.control" ]; then
    log "pgvector present ($(sed -n "s/^default_version = '\(.*\)'/\1/p" "$SHAREDIR/extension/vector.control"))"
    exit 0
fi

src_dir=$(find "$CACHE_DIR" -maxdepth 1 -mindepth 1 -type d -name 'pgvector-*' 2>/dev/null | sort | tail -n1 || true)
if [ -z "$src_dir" ]; then
    # Reuse the mirror URI that apt is already configured with; never hard-code one.
    uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ "$f" = "$SRC_LIST" ] && continue
        uri=$(awk '/^URIs:/ {print $2; exit}' "$f" 2>/dev/null || true)
        [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
    fi
    if [ -z "$uri" ]; then
        log "no apt mirror URI found in /etc/apt/sources.list.d/ or /etc/apt/sources.list"; exit 1
    fi
    log "adding deb-src for trixie from the configured mirror"
    tmp_list=$(mktemp)
    cat > "$tmp_list" <<SRC
Types: deb-src
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $SUDO install -m 0644 "$tmp_list" "$SRC_LIST"
    rm -f "$tmp_list"
    cleanup() { $SUDO rm -f "$SRC_LIST"; $SUDO apt-get update -qq >/dev/null 2>&1 || true; }
    trap cleanup EXIT
    $SUDO apt-get update -qq
    mkdir -p "$CACHE_DIR"
    (cd "$CACHE_DIR" && apt-get source --download-only pgvector >/dev/null && dpkg-source -x --no-check pgvector_*.dsc >/dev/null)
    src_dir=$(find "$CACHE_DIR" -maxdepth 1 -mindepth 1 -type d -name 'pgvector-*' | sort | tail -n1)
fi
log "building $(basename "$src_dir")"
make -C "$src_dir" -s PG_CONFIG="$PG_CONFIG" >/dev/null
$SUDO make -C "$src_dir" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
test -f "$SHAREDIR/extension/vector.control"
log "pgvector installed into $SHAREDIR/extension"
