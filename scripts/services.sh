#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) answer,
# starting whichever is down with the commands this machine's packages use.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port name seconds
  for _ in $(seq "$3"); do up "$1" && return 0; sleep 1; done
  echo "services: $2 did not come up on port $1" >&2
  return 1
}

if ! up 5432; then
  echo "services: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  else
    echo "services: PostgreSQL is down and pg_ctlcluster is not installed" >&2
    exit 1
  fi
  wait_for 5432 PostgreSQL 60
fi

if ! up 5672; then
  echo "services: starting RabbitMQ"
  if command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached
  else
    echo "services: RabbitMQ is down and rabbitmq-server is not installed" >&2
    exit 1
  fi
  wait_for 5672 RabbitMQ 120
fi
# The port opens before the broker accepts AMQP; wait until it does.
if command -v rabbitmqctl >/dev/null; then
  timeout 120 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
echo "services: PostgreSQL and RabbitMQ are up"
