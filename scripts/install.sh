#!/usr/bin/env bash
# Installs the platform into .venv (Python 3.11) and makes sure Java and Maven are present for
# the project's own Kafka broker. Idempotent and quick when nothing changed: it reinstalls only
# when pyproject.toml differs from the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[install] %s\n' "$*" >&2; }

# The common case first, and at once: installed, and pyproject.toml unchanged since.
stamp=.venv/.installed
fingerprint() { cat pyproject.toml scripts/overrides.txt | sha256sum | cut -d' ' -f1; }
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(fingerprint)" ]; then
  exit 0
fi

PY=${MSP_PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$(command -v "$c"); break
    fi
  done
fi
[ -n "$PY" ] || { say "Python 3.11 is required (set MSP_PYTHON to its path)"; exit 1; }

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
# WeasyPrint (customer reports as PDF) draws text with Pango.
ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so.0' || need_apt+=(libpango-1.0-0 libpangoft2-1.0-0)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${need_apt[*]} from Debian packages"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
  else
    say "missing ${need_apt[*]}: install them (apt-get install ${need_apt[*]})"; exit 1
  fi
fi

# uv installs from its own cache, so a fresh virtualenv costs seconds, not minutes.
if ! "$PY" -m uv --version >/dev/null 2>&1; then
  say "installing uv"
  "$PY" -m pip install -q --disable-pip-version-check uv==0.13.8
fi

want=$(fingerprint)
[ -x .venv/bin/python ] || "$PY" -m uv venv -q --python "$PY" .venv
say "installing the platform into .venv"
"$PY" -m uv pip install -q --python .venv/bin/python --overrides scripts/overrides.txt -e '.[dev]'
echo "$want" > "$stamp"
