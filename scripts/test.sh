#!/usr/bin/env bash
# Runs every test Herald has. On a fresh Debian machine it first installs what
# the tests need (redis-server, curl, chromium, and cargo-nextest if missing),
# then:
#   1. cargo fmt --check and cargo clippy -D warnings
#   2. the unit tests and the integration suite (real redis-server processes),
#      the fault suite among them (tests/it/faults, docs/RELIABILITY.md)
#   3. the coverage-guided fuzzers, 60 s per target (scripts/fuzz.sh, AFL++)
#   4. the browser client library's unit tests (Node), then the library, the
#      demo page (/demo) and its service worker in headless Chromium against
#      the real binary
#   5. the publishing examples (redis-cli, Python, Node) against a real gateway
#   6. a syntax check of the k6 scripts
#   7. the load-tool smoke run (fails only on loss or duplication)
# Usage: scripts/test.sh            (CI: .ci/run calls exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v curl >/dev/null || need_apt+=(curl)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The tests start their own redis-server processes; a system one is not needed.
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

log "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

log "build (once, for every step below)"
cargo build --locked --workspace --bins --tests

log "unit and integration tests"
profile=default; [ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --locked --workspace --profile "$profile" --no-fail-fast

log "fuzzing (60 s per target; FUZZ_SECONDS to change)"
bash scripts/fuzz.sh

log "client library unit tests (clients/js/test)"
node --test --test-reporter=spec clients/js/test/

log "client library, demo page and service worker in headless Chromium (tests/browser)"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >/dev/null
HERALD_BIN=target/debug/herald node --test --test-reporter=spec tests/browser/*.test.mjs

if [ -x tests/examples/run.sh ] || [ -f tests/examples/run.sh ]; then
  log "publishing examples (docs/PUBLISHING.md)"
  HERALD_BIN=target/debug/herald bash tests/examples/run.sh
fi

log "k6 scripts: syntax only (k6 itself is not installable here)"
k6_tmp=$(mktemp -d)
for script in k6/*.js; do
  cp "$script" "$k6_tmp/$(basename "$script" .js).mjs"
  node --check "$k6_tmp/$(basename "$script" .js).mjs"
done
rm -rf "$k6_tmp"

if [ -f bench/run.sh ]; then
  log "load smoke run (loss and duplication only, never timing)"
  # The debug build from above: no second, release compile in CI.
  PROFILE=debug NO_BUILD=1 bash bench/run.sh smoke
fi

log "all tests passed"
