#!/usr/bin/env bash
# The demo: builds the release binaries, then runs a headend (SQLite, a
# fresh root CA and the intermediate that issues), the ATG simulator and an
# agent that enrolls with a one-time token (its key made on the "site") and
# connects over mTLS, and shows where to look. The site comes with three
# days of gauge history (the simulator's, put into the agent's log by
# `edge-agent backfill` on the first run), so runout and risk show at once.
# Ctrl-C stops everything.
#   DEMO_EXIT_AFTER_FIRST_READING=1 scripts/demo.sh   # stop once telemetry shows (for measuring)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p headend -p edge-agent -p atg-sim -p tankwatch-pki
bin=target/release
for port in 7443 7444 8080 5020 10001; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use (another demo running?); stop it first" >&2
    exit 1
  fi
done

mkdir -p demo
if [ ! -f demo/pki/ca.key ]; then
  "$bin/pki" --dir demo/pki init-ca
fi
if [ ! -f demo/pki/issuer.key ]; then
  "$bin/pki" --dir demo/pki intermediate
  "$bin/pki" --dir demo/pki server
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# the demo's operator: an admin with a random password kept in demo/ (there is no default password)
if [ ! -f demo/admin-password ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > demo/admin-password)
  "$bin/headend" user add demo-admin --role admin --password-file demo/admin-password \
    --database-url sqlite://demo/headend.db
fi

t0=$(date +%s%N)
"$bin/headend" --pki-dir demo/pki --database-url sqlite://demo/headend.db --inventory-every 10s >demo/headend.log 2>&1 &
pids+=($!)
# the tanks at real speed (sales and deliveries as a station has them)
"$bin/atg-sim" --listen 127.0.0.1:5020 --veeder-root 127.0.0.1:10001 --tanks 4 --speed 1 >demo/atg-sim.log 2>&1 &
pids+=($!)
api=http://127.0.0.1:8080/api/v1
token=""
for _ in $(seq 1 100); do
  token=$(curl -sf "$api/auth/login" -H 'content-type: application/json' \
    -d "{\"user\": \"demo-admin\", \"password\": \"$(cat demo/admin-password)\"}" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' 2>/dev/null) && break
  sleep 0.1
done
if [ -z "$token" ]; then
  echo "demo: could not log in to the headend; see demo/headend.log" >&2
  exit 1
fi
auth="Authorization: Bearer $token"
# the operator asks for a one-time token; the installer enrolls the site's agent with it
enrollment=$(curl -sf -X POST -H "$auth" -H 'content-type: application/json' -d '{}' \
  "$api/sites/demo-site/enrollment-tokens")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
"$bin/edge-agent" enroll --config configs/site-demo.yaml --headend 127.0.0.1:7444 \
  --token "$(field token <<<"$enrollment")" --ca-fingerprint "$(field ca_fingerprint <<<"$enrollment")"
"$bin/edge-agent" check-config configs/site-demo.yaml
# first run: the three days of history the gauge had, into the agent's log
if [ ! -f demo/history.csv ]; then
  "$bin/atg-sim" --tanks 4 --history-hours 72 > demo/history.csv.tmp
  mv demo/history.csv.tmp demo/history.csv
  "$bin/edge-agent" backfill --config configs/site-demo.yaml demo/history.csv
fi
"$bin/edge-agent" run --config configs/site-demo.yaml >demo/agent.log 2>&1 &
agent=$!
pids+=($agent)
for _ in $(seq 1 300); do
  if curl -sf -H "$auth" "$api/sites/demo-site/assets" 2>/dev/null | grep -q '"volume"'; then break; fi
  sleep 0.1
done
if ! curl -sf -H "$auth" "$api/sites/demo-site/assets" | grep -q '"volume"'; then
  echo "demo: no telemetry after 30 s; see demo/*.log" >&2
  exit 1
fi
t1=$(date +%s%N)
for _ in $(seq 1 600); do
  if curl -sf -H "$auth" "$api/risk" 2>/dev/null | grep -q '"runout_at":"'; then break; fi
  sleep 0.1
done
t2=$(date +%s%N)
echo
echo "demo: first reading on the REST API $(( (t1 - t0) / 1000000 )) ms after start"
if curl -sf -H "$auth" "$api/risk" | grep -q '"runout_at":"'; then
  echo "demo: runout and risk on the REST API $(( (t2 - t0) / 1000000 )) ms after start:"
  curl -sf -H "$auth" "$api/risk" | python3 -c 'import json, sys
for t in json.load(sys.stdin):
    h = t.get("hours_to_runout") or 0
    print("  %s/%s: runs out %s (in %.0f h), risk %s" % (t["site"], t["tank"], t.get("runout_at"), h, t.get("risk")))
' || true
else
  echo "demo: no runout yet (see demo/headend.log)"
fi
echo "demo: agent resident memory: $(awk '/VmRSS/ {print $2, $3}' /proc/$agent/status)"
echo
echo "  the operator console: http://127.0.0.1:8080/ (user demo-admin, password in demo/admin-password)"
echo
echo "  operator demo-admin, password in demo/admin-password; a 15-minute access token:"
echo "  export TOKEN=$token"
echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" $api/sites | python3 -m json.tool"
echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" $api/sites/demo-site/assets | python3 -m json.tool"
echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" '$api/sites/demo-site/assets/tank-1/readings?field=volume&order=desc&limit=10' | python3 -m json.tool"
echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" $api/sites/demo-site/deliveries | python3 -m json.tool   # source: gauge or detector"
echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" $api/tanks | python3 -m json.tool               # volume, freshness, flags, rate, runout, risk"
echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" $api/risk | python3 -m json.tool                # by soonest runout"
echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" $api/audit | python3 -m json.tool               # who did what"
echo "  curl -s -H \"Authorization: Bearer \$TOKEN\" $api/sites/demo-site/certificates | python3 -m json.tool  # enrolled, renewed, revoked"
echo "  curl -s http://127.0.0.1:8080/api/openapi.json | python3 -m json.tool | less                  # the API"
echo "  $bin/edge-agent probe veeder-root 127.0.0.1:10001 --cmd i20100  # what an installer sees"
echo
echo "  logs: demo/headend.log demo/agent.log demo/atg-sim.log   (Ctrl-C stops the demo)"
if [ "${DEMO_EXIT_AFTER_FIRST_READING:-0}" = 1 ]; then
  sleep 10
  echo "demo: agent resident memory after 10 s: $(awk '/VmRSS/ {print $2, $3}' /proc/$agent/status)"
  exit 0
fi
wait
