#!/usr/bin/env bash
# Installs the MCP servers and the MCP client that plan's tests use, at the versions pinned
# beside this script, into DIR (kept between runs: reinstalled only when a pin changes).
#   DIR/npm:   @modelcontextprotocol/server-everything and server-filesystem (npm ci, with
#              its own npm cache in DIR/npm-cache); run with `npx --prefix DIR/npm`
#   DIR/venv:  a Python venv with the official MCP SDK (`mcp` on PyPI)
# Usage: prepare.sh DIR [npm|python|all]. Called by the tests' helper and by `cargo xtask test`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: prepare.sh DIR [npm|python|all]}
what=${2:-all}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# One installer at a time (test binaries run in parallel).
exec 9>"$dir/.lock"
flock 9

if [ "$what" = npm ] || [ "$what" = all ]; then
    if ! command -v npm >/dev/null || ! command -v npx >/dev/null; then
        echo "prepare.sh: node and npm are missing: install them (apt-get install -y nodejs npm), or run \`cargo xtask test\`, which does" >&2
        exit 3
    fi
    if ! cmp -s "$here/package-lock.json" "$dir/npm/.installed" 2>/dev/null; then
        rm -rf "$dir/npm"
        mkdir -p "$dir/npm"
        cp "$here/package.json" "$here/package-lock.json" "$dir/npm/"
        (cd "$dir/npm" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error \
            --cache "$dir/npm-cache" >&2)
        cp "$here/package-lock.json" "$dir/npm/.installed"
    fi
fi

if [ "$what" = python ] || [ "$what" = all ]; then
    if ! cmp -s "$here/requirements.txt" "$dir/venv/.installed" 2>/dev/null; then
        rm -rf "$dir/venv"
        if ! python3 -m venv "$dir/venv" >&2; then
            echo "prepare.sh: python3 cannot make a venv: install python3-venv (apt-get install -y python3-venv), or run \`cargo xtask test\`, which does" >&2
            exit 3
        fi
        "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --cache-dir "$dir/pip-cache" -r "$here/requirements.txt" >&2
        cp "$here/requirements.txt" "$dir/venv/.installed"
    fi
fi
