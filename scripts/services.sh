#!/usr/bin/env bash
# Makes sure the local services the tests need are running (PostgreSQL on
# 127.0.0.1:5432, Mosquitto on 127.0.0.1:1883), starting them with the
# machine's own commands when they are down.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! up 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! up 1883; then
  echo "services: starting Mosquitto"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi
for i in $(seq 1 30); do
  if up 5432 && up 1883; then exit 0; fi
  sleep 1
done
echo "services: PostgreSQL or Mosquitto did not come up" >&2
exit 1
