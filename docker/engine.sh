#!/usr/bin/env bash
# A Docker engine for builds and container runs on this machine.
#   docker/engine.sh install  Debian's docker.io and debootstrap where missing, when root on Debian (else nothing:
#                             `start` and docker/debian-base.sh say what is missing)
#   docker/engine.sh start    start dockerd in the background unless an engine answers; prints "started" or
#                             "running"; exit 1 with the reason (and the daemon log's tail) when none can run
#   docker/engine.sh stop     stop the dockerd that `start` started (its pid file), nothing else
set -euo pipefail

STATE="${VESSELSEG_DOCKERD_DIR:-/var/run/vesselseg-dockerd}"
PIDFILE="$STATE/dockerd.pid"
LOG="$STATE/dockerd.log"

answers() { docker info >/dev/null 2>&1; }

case "${1:-}" in
  install)
    missing=()
    command -v dockerd >/dev/null || answers || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [[ ${#missing[@]} == 0 || "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then exit 0; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    ;;
  start)
    if answers; then echo running; exit 0; fi
    if ! command -v dockerd >/dev/null; then
      echo "no Docker engine: install one (Debian: apt-get install docker.io, or docker/engine.sh install as root)" >&2
      exit 1
    fi
    if [[ "$(id -u)" != 0 ]]; then
      echo "no Docker engine answers and dockerd needs root here; start it as root: sudo docker/engine.sh start" >&2
      exit 1
    fi
    mkdir -p "$STATE"
    # setsid: the daemon outlives the shell that started it and does not get its terminal's signals.
    setsid dockerd >"$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 60); do
      if answers; then echo started; exit 0; fi
      if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then break; fi
      sleep 1
    done
    echo "dockerd did not come up (log $LOG):" >&2
    tail -n 5 "$LOG" >&2
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
    exit 1
    ;;
  stop)
    [[ -f "$PIDFILE" ]] || exit 0
    pid="$(cat "$PIDFILE")"
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    fi
    rm -f "$PIDFILE"
    ;;
  *)
    echo "usage: docker/engine.sh install|start|stop" >&2
    exit 2
    ;;
esac
