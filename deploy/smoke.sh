#!/usr/bin/env bash
# Smoke test of the container: build the image, start it with docker compose,
# wait for the healthcheck, run the README's curl examples, stop it with SIGTERM
# and check it exited cleanly, then tear everything down.
set -euo pipefail
cd "$(dirname "$0")/.."

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-memdb-smoke}
export PORT=${SMOKE_PORT:-18080}
export MEMDB_BIND=127.0.0.1
compose() { docker compose -f docker-compose.yml "$@"; }
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

step "build"
compose build --quiet
step "start"
compose up -d
container=$(compose ps -q memdb)

step "wait for the healthcheck"
status=starting
for _ in $(seq 60); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$container")
  [ "$status" = healthy ] && break
  sleep 2
done
echo "health: $status"
[ "$status" = healthy ] || { compose logs; fail "the container did not turn healthy"; }

base="http://127.0.0.1:$PORT/api/v1"
json=(-H 'Content-Type: application/json')

step "POST /api/v1/data/users"
user=$(curl -fsS -X POST "$base/data/users" "${json[@]}" \
  -d '{"data": {"email": "john.doe@example.com", "full_name": "John Doe", "age": 30, "password": "securepass123"}}')
echo "$user"
user_id=$(field id <<<"$user")

step "POST /api/v1/data/orders"
order=$(curl -fsS -X POST "$base/data/orders" "${json[@]}" \
  -d "{\"data\": {\"product_name\": \"Widget Pro\", \"quantity\": 2, \"total_price\": 99.99, \"user_id\": \"$user_id\"}}")
echo "$order"

step "PUT /api/v1/data/users/$user_id"
updated=$(curl -fsS -X PUT "$base/data/users/$user_id" "${json[@]}" -d '{"data": {"full_name": "John Smith Doe"}}')
echo "$updated"
[ "$(field full_name <<<"$updated")" = "John Smith Doe" ] || fail "the update did not apply"

step "GET /api/v1/join/users/orders/user_id"
joined=$(curl -fsS "$base/join/users/orders/user_id")
echo "$joined"
[ "$(field count <<<"$joined")" = 1 ] || fail "the join should have one row"

step "GET /api/v1/dump/users"
dump=$(curl -fsS "$base/dump/users")
echo "$dump"
[ "$(field count <<<"$dump")" = 1 ] || fail "the dump should hold one user"

for body in "$user" "$updated" "$joined" "$dump"; do
  case "$body" in *securepass123* | *argon2*) fail "a password leaked into an answer" ;; esac
done
if compose logs | grep -q -e securepass123 -e argon2; then fail "a password leaked into the logs"; fi

step "GET /metrics"
curl -fsS "http://127.0.0.1:$PORT/metrics" | grep -E '^memdb_records' || fail "no store metrics"

step "stop (SIGTERM)"
compose stop -t 20
code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
echo "exit code: $code"
compose logs --no-log-prefix | tail -n 3
[ "$code" = 0 ] || fail "the service did not stop cleanly"

echo
echo "smoke: OK"
