#!/usr/bin/env bash
# make check-image: build the image, run it through compose as an operator would,
# check what it promises, print its size, tear everything down.
#
#  1. A Docker engine: DOCKER_HOST or the default socket if one answers; else the
#     private engine of the workspace's docker-local helper where it exists
#     (DOCKER_LOCAL=its path), with its stand-in python:3.11-slim; else stop and say so.
#  2. docker build --network host (BuildKit, no registry needed beyond the base image).
#  3. docker compose -f docker-compose.yml -f docker-compose.check.yml up: migrate,
#     api, worker, scheduler and fake-email containers on the host's network, against
#     PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and RabbitMQ on
#     127.0.0.1:5672 (guest), in database birthdayd_image_check and queue
#     birthdayd-image-check (both dropped before and after).
#  4. Checks: migrate exits 0; every container's HEALTHCHECK turns healthy; /health,
#     /ready and /metrics on each role; uid 10001, read-only root (a write fails),
#     no capabilities, no pip/setuptools in the venv, no apt lists; one greeting
#     delivered end to end (POST /user -> scheduler -> queue -> worker -> fake-email);
#     a wedged (SIGSTOPped) api turns unhealthy and recovers; `compose stop` makes
#     every container exit 0 within the drain (SHUTDOWN_GRACE, 30 s).
#  5. Prints the image size, then `compose down`.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${BIRTHDAYD_IMAGE:-birthdayd:check}
DB=birthdayd_image_check
QUEUE=birthdayd-image-check
PG_URL=postgresql://postgres@127.0.0.1:5432
AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
API_PORT=${CHECK_API_PORT:-13080}
WORKER_PORT=${CHECK_WORKER_PORT:-13081}
SCHEDULER_PORT=${CHECK_SCHEDULER_PORT:-13082}
FAKE_PORT=${CHECK_FAKE_EMAIL_PORT:-13025}
DRAIN_S=30  # birthdayd's SHUTDOWN_GRACE default: a stop must end inside it
export BIRTHDAYD_IMAGE=$IMAGE CHECK_API_PORT=$API_PORT CHECK_WORKER_PORT=$WORKER_PORT \
  CHECK_SCHEDULER_PORT=$SCHEDULER_PORT CHECK_FAKE_EMAIL_PORT=$FAKE_PORT

SECONDS=0
say() { printf 'check-image [%3ds] %s\n' "$SECONDS" "$*"; }
fail() { printf 'check-image [%3ds] FAIL: %s\n' "$SECONDS" "$*" >&2; exit 1; }
ok() { say "ok: $*"; }

# --- 1. the engine ----------------------------------------------------------------
# The engine's own client where there is one (/usr/bin/docker: BuildKit built in);
# a newer client elsewhere on PATH may lack the buildx plugin that BuildKit needs.
client() {
  if [[ -n ${DOCKER:-} ]]; then echo "$DOCKER"
  elif [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker
  else command -v docker || true
  fi
}
DOCKER=$(client)
docker_local=${DOCKER_LOCAL:-../shared/tools/docker-local}
if [[ -n $DOCKER ]] && "$DOCKER" info >/dev/null 2>&1; then
  say "engine: ${DOCKER_HOST:-the default socket}"
elif [[ -x $docker_local ]]; then
  say "no engine answers: starting $docker_local"
  eval "$("$docker_local" start)"
  export DOCKER_HOST
  "$docker_local" base  # the stand-in python:3.11-slim, built once (no registry)
  DOCKER=$(client)
  say "engine: $DOCKER_HOST"
else
  fail "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}) and there is no \
$docker_local to start one: start dockerd, or set DOCKER_HOST (or DOCKER_LOCAL)"
fi
[[ -n $DOCKER ]] || fail "no docker client"

# The real Compose v2+ (a Go binary), installed where the docker CLI finds plugins.
if ! "$DOCKER" compose version >/dev/null 2>&1; then
  [[ -f scripts/deploy-tools.sh ]] || fail "docker compose is missing and scripts/deploy-tools.sh is not here"
  bash scripts/deploy-tools.sh compose
fi
compose_version=$("$DOCKER" compose version --short)
[[ $compose_version =~ ^v?([2-9]|[1-9][0-9])\. ]] || fail "docker compose $compose_version is not Compose v2 or later"
say "client: $("$DOCKER" version -f '{{.Client.Version}}'), engine $("$DOCKER" version -f '{{.Server.Version}}'), compose $compose_version"

compose() { "$DOCKER" compose -f docker-compose.yml -f docker-compose.check.yml "$@"; }
cid() { compose ps -a -q "$1"; }
inspect() { "$DOCKER" inspect -f "$2" "$(cid "$1")"; }
http() { curl -fsS --max-time 5 "$@"; }

# Drops the check's database and queues, with the image's own drivers.
drop_state() {
  "$DOCKER" run --rm --network host --entrypoint python "$IMAGE" -c "
import asyncio, asyncpg, aiormq
async def main():
    conn = await asyncpg.connect('$PG_URL/postgres')
    await conn.execute('DROP DATABASE IF EXISTS $DB WITH (FORCE)')
    await conn.close()
    amqp = await aiormq.connect('$AMQP_URL')
    channel = await amqp.channel()
    for queue in ('$QUEUE', '$QUEUE.dead'):
        await channel.queue_delete(queue)
    for exchange in ('$QUEUE', '$QUEUE.dlx'):
        await channel.exchange_delete(exchange)
    await amqp.close()
asyncio.run(main())"
}

secrets=$(mktemp -d)
chmod 0755 "$secrets"
finish() {
  local status=$?
  set +e
  if ((status != 0)) && [[ -n $(compose ps -a -q 2>/dev/null) ]]; then
    echo "--- container logs (last 40 lines each) ---"
    compose logs --no-color --tail 40
  fi
  compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
  "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 && drop_state
  rm -rf "$secrets"
  ((status == 0)) && say "PASS" || say "FAILED (exit $status)"
}
trap finish EXIT

# --- 2. build -----------------------------------------------------------------------
build_log=$(mktemp)
start=$SECONDS
if ! DOCKER_BUILDKIT=1 "$DOCKER" build --network host -t "$IMAGE" . >"$build_log" 2>&1; then
  tail -40 "$build_log"; rm -f "$build_log"; fail "docker build"
fi
rm -f "$build_log"
ok "built $IMAGE in $((SECONDS - start)) s"

# --- 3. up ----------------------------------------------------------------------------
# Secrets as operators provide them: files, read through DATABASE_URL_FILE etc.
printf '%s/%s\n' "$PG_URL" "$DB" >"$secrets/database_url"
printf '%s\n' "$AMQP_URL" >"$secrets/rabbitmq_url"
for unused in postgres_password rabbitmq_default_user.conf grafana_admin_password api_token; do
  : >"$secrets/$unused"
done
chmod 0644 "$secrets"/*
export SECRETS_DIR=$secrets
# Every process's clock starts 60 s before 09:00 UTC on 15 January (each at its own
# start, then at real speed): a user born on 15 January and created in that minute is
# greeted today, at 09:00, while the check runs (a slow start fails, and says so).
export CHECK_IMAGE_NOW=2027-01-15T08:59:00+00:00

compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
drop_state
start=$SECONDS
compose up -d --no-build 2>&1 | sed 's/^/  compose: /'
[[ $(inspect migrate '{{.State.Status}} {{.State.ExitCode}}') == "exited 0" ]] \
  || fail "migrate did not exit 0"
ok "migrate exited 0: $("$DOCKER" logs "$(cid migrate)" 2>&1 | grep -o 'applied [0-9]* migration(s)' || true)"

SERVICES=(api worker scheduler fake-email)
for _ in $(seq 120); do
  states=""
  for s in "${SERVICES[@]}"; do states+="$s=$(inspect "$s" '{{.State.Health.Status}}') "; done
  [[ $states == *starting* || $states == *unhealthy* ]] || break
  sleep 0.5
done
for s in "${SERVICES[@]}"; do
  [[ $(inspect "$s" '{{.State.Health.Status}}') == healthy ]] || fail "$s is not healthy: $states"
done
ok "HEALTHCHECK healthy in $((SECONDS - start)) s after up: $states"

# --- 4. checks --------------------------------------------------------------------------
for pair in api:$API_PORT worker:$WORKER_PORT scheduler:$SCHEDULER_PORT; do
  s=${pair%%:*} port=${pair#*:}
  [[ $(http "http://127.0.0.1:$port/health") == *'"ok"'* ]] || fail "$s /health"
  ready=$(http "http://127.0.0.1:$port/ready") || fail "$s /ready: not 200"
  metrics=$(http "http://127.0.0.1:$port/metrics") || fail "$s /metrics"
  grep -q '^birthdayd_' <<<"$metrics" || fail "$s /metrics has no birthdayd_ series"
  ok "$s :$port /health 200, /ready 200 $ready, /metrics 200 ($(grep -c '^birthdayd_' <<<"$metrics") birthdayd_ samples)"
done
http "http://127.0.0.1:$FAKE_PORT/health" >/dev/null || fail "fake-email /health"
ok "fake-email :$FAKE_PORT /health 200"

# One greeting end to end. Created before 09:00 on the processes' clock, it is due
# today; the scheduler (a tick every 2 s here) claims it at 09:00 and the worker
# sends it to the fake provider.
email="image-check-$RANDOM@example.com"
created=$(http -X POST "http://127.0.0.1:$API_PORT/user" -H 'Content-Type: application/json' \
  -d "{\"firstName\": \"Ada\", \"lastName\": \"Lovelace\", \"birthday\": \"1990-01-15\",
       \"location\": \"Europe/London\", \"email\": \"$email\"}") || fail "POST /user"
read -r user_id send_at < <(python3 -c 'import json, sys
user = json.load(sys.stdin)
print(user["id"], user["schedule"][0]["sendAt"])' <<<"$created") || fail "POST /user answered: $created"
[[ $send_at == 2027-01-15T09:00:00Z ]] \
  || fail "POST /user: the greeting is due $send_at, not today at 09:00 (created too late?)"
ok "POST /user 201: user $user_id ($email), greeting due $send_at"

# While it falls due: what the containers run as and may touch.
for s in "${SERVICES[@]}"; do
  c=$(cid "$s")
  [[ $("$DOCKER" inspect -f '{{.Config.User}}' "$c") == 10001:10001 ]] || fail "$s: image user"
  uids=$("$DOCKER" exec "$c" sh -c 'for p in /proc/[0-9]*; do awk "/^Uid:/{print \$2}" $p/status; done | sort -u | tr "\n" " "')
  [[ $uids == "10001 " ]] || fail "$s: processes run as uid(s) $uids"
  [[ $("$DOCKER" inspect -f '{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}' "$c") == "true [ALL]" ]] \
    || fail "$s: not read-only with every capability dropped"
  if err=$("$DOCKER" exec "$c" sh -c 'echo x > /opt/birthdayd/probe' 2>&1); then fail "$s: wrote to /opt/birthdayd"; fi
  [[ $err == *"Read-only file system"* ]] || fail "$s: write failed for another reason: $err"
  "$DOCKER" exec "$c" sh -c 'echo x > /tmp/probe' || fail "$s: /tmp (tmpfs) not writable"
done
ok "every container: uid 10001 for all its processes, read-only root (write to /opt/birthdayd: Read-only file system; /tmp tmpfs writable), cap_drop ALL"

api=$(cid api)
if "$DOCKER" exec "$api" python -c 'import pip' 2>/dev/null \
   || "$DOCKER" exec "$api" python -c 'import setuptools' 2>/dev/null; then
  fail "pip or setuptools importable in the runtime venv"
fi
venv_bin=$("$DOCKER" exec "$api" ls /opt/birthdayd/bin | tr '\n' ' ')
[[ $venv_bin != *pip* && $venv_bin != *wheel* ]] || fail "venv bin has pip/wheel: $venv_bin"
[[ -z $("$DOCKER" exec "$api" sh -c 'ls -A /var/lib/apt/lists; ls /var/cache/apt/archives/*.deb 2>/dev/null') ]] \
  || fail "apt lists or package cache left in the image"
ok "venv without pip, setuptools, wheel (bin: $venv_bin); apt lists and cache empty"

# A wedged api (the process stopped, its port still open) must turn unhealthy.
# birthdayd is tini's only child (PPid 1; an exec'd shell's parent is outside).
pid=$("$DOCKER" exec "$api" sh -c \
  'for p in /proc/[0-9]*; do awk -v p="${p#/proc/}" "/^PPid:\t1\$/ {print p}" $p/status; done')
[[ $pid =~ ^[0-9]+$ ]] || fail "cannot find birthdayd under tini in api: '$pid'"
"$DOCKER" exec "$api" sh -c "kill -STOP $pid"
if out=$("$DOCKER" exec "$api" birthdayd healthcheck --timeout 2 2>&1); then fail "healthcheck passed on a wedged api"; fi
wedged=$SECONDS
for _ in $(seq 60); do [[ $(inspect api '{{.State.Health.Status}}') == unhealthy ]] && break; sleep 1; done
[[ $(inspect api '{{.State.Health.Status}}') == unhealthy ]] || fail "a wedged api stayed healthy"
ok "wedged api: 'birthdayd healthcheck' exits 1 ($out); HEALTHCHECK unhealthy after $((SECONDS - wedged)) s"
"$DOCKER" exec "$api" sh -c "kill -CONT $pid"
for _ in $(seq 60); do [[ $(inspect api '{{.State.Health.Status}}') == healthy ]] && break; sleep 0.5; done
[[ $(inspect api '{{.State.Health.Status}}') == healthy ]] || fail "api did not recover"
ok "api resumed: healthy again"

delivered=""
for _ in $(seq 180); do
  stats=$(http "http://127.0.0.1:$FAKE_PORT/stats") || fail "fake-email /stats"
  if [[ $stats == *"\"$email\":1"* ]]; then delivered=1; break; fi
  sleep 0.5
done
[[ -n $delivered ]] || fail "no greeting reached fake-email: $stats"
sent=$(http "http://127.0.0.1:$API_PORT/messages?status=sent&limit=10") || fail "GET /messages"
[[ $sent == *"\"userId\":\"$user_id\""* ]] || fail "GET /messages?status=sent does not list it: $sent"
ok "greeting delivered once: fake-email /stats byEmail $email=1; GET /messages?status=sent lists user $user_id"

# --- 5. size, then stop ------------------------------------------------------------------
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
base=$("$DOCKER" image inspect -f '{{.Size}}' python:3.11-slim 2>/dev/null || echo 0)
say "image size: $IMAGE $((size / 1000000)) MB, of which $(((size - base) / 1000000)) MB over python:3.11-slim ($((base / 1000000)) MB here)"

stop_at=$(date +%s.%N)
compose stop 2>&1 | sed 's/^/  compose: /'
stopped_in=$(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $stop_at}")
for s in "${SERVICES[@]}"; do
  read -r code oom finished <<<"$(inspect "$s" '{{.State.ExitCode}} {{.State.OOMKilled}} {{.State.FinishedAt}}')"
  took=$(awk "BEGIN {printf \"%.1f\", $(date -d "$finished" +%s.%N) - $stop_at}")
  [[ $code == 0 && $oom == false ]] || fail "$s exited $code (OOM killed: $oom) on stop"
  awk "BEGIN {exit !($took < $DRAIN_S)}" || fail "$s took $took s to stop (drain: $DRAIN_S s)"
  say "  $s exited 0, $took s after stop"
done
ok "compose stop: every container exited 0 within the ${DRAIN_S} s drain (all stopped in $stopped_in s)"
