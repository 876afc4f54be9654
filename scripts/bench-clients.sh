#!/usr/bin/env bash
# Enqueue throughput of the producer libraries against the usual queue
# libraries of their language, same run, same redis-server:
# Python: spool_client vs Celery apply_async and RQ; Node: spool-client vs
# BullMQ add/addBulk. Installs celery and rq into target/py-clients.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-clients.sh >/dev/null
venv="$(pwd)/target/py-clients"
"$venv/bin/pip" install -q "celery[redis]>=5.3" "rq>=1.16" "hiredis>=2"
(cd clients/python && "$venv/bin/python" bench/enqueue.py)
(cd clients/node && node bench/enqueue.mjs)
