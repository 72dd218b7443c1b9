#!/usr/bin/env bash
# The end-to-end story the code tells today, on a fresh SQLite file: schema, releases with
# immutable config snapshots, the audit trail and tamper detection; then the reference bot
# trading on the embedded simulator through the daemon: `canaryctl demo`, whose last line is
# one JSON object with each rollout's outcome and the measured detection and rollback times.
set -euo pipefail
cd "$(dirname "$0")/.."

workdir=$(mktemp -d -t canary-demo-XXXXXX)
export CANARY_DB="sqlite:///$workdir/canary.db"
export CANARY_ACTOR="demo-operator"
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "create the schema in a fresh database ($workdir/canary.db)"
canaryctl db upgrade

step "record the baseline release 1.0.0 and its config snapshot"
canaryctl release add 1.0.0 --manifest examples/reference-bot/manifest.yaml \
  --config examples/reference-bot/strategy.yaml --notes "baseline"

step "record candidate 1.1.0 (raises SOLUSDT leverage)"
canaryctl release add 1.1.0 --manifest examples/reference-bot/manifest.yaml \
  --config examples/reference-bot/strategy-next.yaml --notes "candidate"

step "recording 1.0.0 again with identical content changes nothing"
canaryctl release add 1.0.0 --manifest examples/reference-bot/manifest.yaml \
  --config examples/reference-bot/strategy.yaml

step "recording 1.0.0 with other content is refused (exit 2)"
if canaryctl release add 1.0.0 --manifest examples/reference-bot/manifest.yaml \
     --config examples/reference-bot/strategy-next.yaml; then
  echo "unexpected: a changed release was accepted" >&2; exit 1
fi

step "releases and what changed between their configs"
canaryctl release list
canaryctl config diff 1.0.0 1.1.0

step "the audit trail, and its verification"
canaryctl audit query
canaryctl audit verify

step "edit one audit row behind the controller's back: verify names it (exit 1)"
cp "$workdir/canary.db" "$workdir/tampered.db"
python - "$workdir/tampered.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
db.commit()
PY
if CANARY_DB="sqlite:///$workdir/tampered.db" canaryctl audit verify; then
  echo "unexpected: tampering went unnoticed" >&2; exit 1
fi

step "canaryctl demo: the daemon promotes a healthy canary and rolls back a wrong-leverage one"
canaryctl demo --json --workdir "$workdir/daemon"

step "done; the databases are kept at $workdir/canary.db and $workdir/daemon/canary.db"
