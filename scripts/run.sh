#!/usr/bin/env bash
# make run: start Redis (AOF on) and `imagegen serve` on a config, for trying
# imagegen on one machine. Secrets it needs and you did not give are generated
# once into RUN_DIR and reused; they are never printed.
set -euo pipefail
bin=${1:?binary}; config=${2:?config}; run_dir=${3:?run dir}
mkdir -p "$run_dir/redis" "$run_dir/images"
umask 077

secret_file() { # name -> prints a stable random secret stored in RUN_DIR
  local f="$run_dir/$1"
  [ -s "$f" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$f"
  cat "$f"
}
export IMAGEGEN_WEBHOOK_SECRET=${IMAGEGEN_WEBHOOK_SECRET:-$(secret_file webhook-secret)}
export IMAGEGEN_API_TOKEN=${IMAGEGEN_API_TOKEN:-$(secret_file api-token)}
export IMAGEGEN_ENCRYPTION_KEY=${IMAGEGEN_ENCRYPTION_KEY:-$(secret_file encryption-key)}
export IMAGEGEN_DIR=${IMAGEGEN_DIR:-$(cd "$run_dir" && pwd)/images}
redis_port=${IMAGEGEN_REDIS_PORT:-6379}
export IMAGEGEN_REDIS=${IMAGEGEN_REDIS:-redis://127.0.0.1:$redis_port/0}

if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
  echo "using the Redis already on 127.0.0.1:$redis_port"
else
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$(cd "$run_dir/redis" && pwd)" \
    --appendonly yes --appendfsync everysec --daemonize yes --pidfile "$(cd "$run_dir" && pwd)/redis.pid" \
    --logfile "$(cd "$run_dir" && pwd)/redis.log"
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  echo "started Redis on 127.0.0.1:$redis_port (AOF in $run_dir/redis)"
fi

echo "webhook secret and API token: in $run_dir/webhook-secret and $run_dir/api-token"
echo "starting: $bin serve --config $config"
exec "$bin" serve --config "$config"
