#!/usr/bin/env bash
# Where the CPU goes: the gateway under `valgrind --tool=callgrind` serving N
# requests from tollgate-bench against the mock, per config (plain, policy,
# policy-redis). Instruction counts do not depend on what else the machine
# runs, so two builds can be compared on a loaded machine.
#
#   bench/callgrind.sh                      # N=2000, all three configs
#   N=500 CONFIGS=policy bench/callgrind.sh
#   BIN=/path/to/release bench/callgrind.sh # another build (a baseline)
#   VALGRIND=0 bench/callgrind.sh           # no valgrind: Redis commands only
#   CONFIGS=plain,plain-otlp bench/callgrind.sh  # the cost of span export
#   API=responses CONFIGS=plain bench/callgrind.sh  # /v1/responses, not chat
#
# plain-otlp is plain with `telemetry.otlp_endpoint` set to a collector of
# our own (python3, answers 200 to every POST), so the export thread's
# encoding and posting are counted too.
#
# Needs release binaries with line tables:
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release \
#     -p tollgate -p mock-provider -p tollgate-bench
# Writes bench/results/callgrind-RUN_ID/{CONFIG.out, CONFIG.annotate.txt,
# summary.txt}; prints instructions per request and Redis commands per
# request (policy-redis, from `INFO commandstats` before and after).
# Stops only the processes it started, by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release}"
N="${N:-2000}"
WARMUP="${WARMUP:-200}"
CONFIGS="${CONFIGS:-plain,policy,policy-redis}"
VALGRIND="${VALGRIND:-1}"
# The API the load uses: chat (`/v1/chat/completions`), responses
# (`/v1/responses`, served natively by the mock's `openai` kind).
API="${API:-chat}"
case "$API" in
  chat) API_PATH=/v1/chat/completions ;;
  responses) API_PATH=/v1/responses ;;
  *) echo "callgrind.sh: unknown API $API" >&2; exit 2 ;;
esac
ADMIN_KEY="cg-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
UPSTREAM_KEY="sk-cg-upstream-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
OUT="${OUT:-$ROOT/bench/results/callgrind}-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
log() { echo "[callgrind] $*" >&2; }

declare -a PIDS=()
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { local pid; for pid in "${PIDS[@]}"; do stop_pid "$pid"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_cmds() {
  # Total calls of every command (EVALSHA counts once; the redis.call inside
  # scripts are counted under their own names).
  redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | awk -F'[:=,]' '/^cmdstat_/ {print $1, $3}'
}

# A Redis of our own: the machine's is shared, and its command counts with it.
REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
PIDS+=("$!")
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

"$BIN/mock-provider" --listen 127.0.0.1:0 --api-key "$UPSTREAM_KEY" >"$OUT/mock.log" 2>&1 &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
MOCK_URL=""
for _ in $(seq 1 100); do
  MOCK_URL="$(awk '/listening on/ {print $NF; exit}' "$OUT/mock.log")"
  [[ -n "$MOCK_URL" ]] && break
  sleep 0.1
done
[[ -n "$MOCK_URL" ]] || { echo "callgrind.sh: the mock provider did not start" >&2; exit 1; }

# A collector that takes every OTLP POST and answers 200 (for plain-otlp).
COLLECTOR_PORT="$(free_port)"
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$COLLECTOR_PORT" >"$OUT/collector.log" 2>&1 &
PIDS+=("$!")

write_config() {
  local file="$1" port="$2" counters="$3" extra="${4:-}"
  cat >"$file" <<YAML
listen: 127.0.0.1:$port
admin_key: \${TOLLGATE_ADMIN_KEY}
store: sqlite://tollgate.db
counters: $counters
providers:
  - name: mock
    kind: openai
    base_url: $MOCK_URL
    api_key: \${CG_UPSTREAM_KEY}
    timeout_s: 30
models:
  - name: gpt-4o-mini
    targets:
      - provider: mock
        model: gpt-4o-mini
    price: { input_per_mtok: 0.15, output_per_mtok: 0.60 }
    max_output_tokens: 4096
policies:
  - name: bench-budget
    type: cost-limit
    config: { limit_usd: 1000000, period: daily, action: reject }
  - name: bench-rate
    type: rate-limit
    config: { requests_per_minute: 1000000000, tokens_per_minute: 1000000000000, max_parallel: 100000 }
  - name: bench-loop
    type: loop-guard
    config: { max_identical: 1000000000, window_seconds: 60 }
  - name: bench-models
    type: model-access
    config: { allow: ["gpt-4o-*"] }
teams:
  - id: bench-plain
    policies: []
  - id: bench-policy
    policies: [bench-budget, bench-rate, bench-loop, bench-models]
$extra
YAML
}

SUMMARY="$OUT/summary.txt"
IFS=',' read -r -a configs <<<"$CONFIGS"
for cfg in "${configs[@]}"; do
  counters=memory team=bench-plain extra=""
  key_args=()
  case "$cfg" in
    plain) ;;
    plain-otlp) extra="telemetry: { otlp_endpoint: 'http://127.0.0.1:$COLLECTOR_PORT' }" ;;
    policy) team=bench-policy ;;
    policy-redis) team=bench-policy; counters="$REDIS_URL" ;;
    *) echo "callgrind.sh: unknown config $cfg" >&2; exit 2 ;;
  esac
  [[ $team == bench-policy ]] && key_args=(--models gpt-4o-mini --budget-usd 1000000 --period daily --rpm 1000000000 --tpm 1000000000000)
  dir="$OUT/gw-$cfg"; mkdir -p "$dir"
  port="$(free_port)"; url="http://127.0.0.1:$port"
  write_config "$dir/tollgate.yaml" "$port" "$counters" "$extra"
  # Instrumentation off until the warm-up is done: start-up (migrations,
  # tokenizer tables) is not per-request cost.
  vg=()
  [[ $VALGRIND == 1 ]] && vg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$cfg.out")
  (cd "$dir" && TOLLGATE_ADMIN_KEY="$ADMIN_KEY" CG_UPSTREAM_KEY="$UPSTREAM_KEY" \
     exec "${vg[@]}" "$BIN/tollgate" serve --config "$dir/tollgate.yaml" >"$dir/gateway.log" 2>&1) &
  pid=$!; PIDS+=("$pid")
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$url/healthz" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/gateway.log" >&2; exit 1; }
    sleep 0.2
  done
  key="$(TOLLGATE_URL="$url" TOLLGATE_ADMIN_KEY="$ADMIN_KEY" "$BIN/tollgate" keys create --team "$team" --name cg "${key_args[@]}" \
          | grep -oE 'sk-tg-[A-Za-z0-9_-]+' | head -1)"
  [[ -n "$key" ]] || { echo "callgrind.sh: no key for $cfg" >&2; exit 1; }
  "$BIN/tollgate-bench" --url "$url$API_PATH" --api "$API" -H "Authorization: Bearer $key" \
    -c 1 -n "$WARMUP" --timeout-s 60 --json >"$OUT/$cfg-warmup.json"
  sleep 1
  [[ $VALGRIND == 1 ]] && callgrind_control -i on "$pid" >/dev/null
  [[ $counters == memory ]] || redis_cmds >"$OUT/$cfg-redis-before.txt"
  "$BIN/tollgate-bench" --url "$url$API_PATH" --api "$API" -H "Authorization: Bearer $key" \
    -c 1 -n "$N" --warmup 0 --timeout-s 60 --json >"$OUT/$cfg-load.json"
  # Settlements run just after each answer: let the last ones land.
  sleep 2
  [[ $counters == memory ]] || redis_cmds >"$OUT/$cfg-redis-after.txt"
  [[ $VALGRIND == 1 ]] && callgrind_control -i off "$pid" >/dev/null
  ok="$(jq '.ok' "$OUT/$cfg-load.json")"
  stop_pid "$pid"
  total=0
  [[ $VALGRIND == 1 ]] && total="$( (callgrind_annotate "$OUT/$cfg.out" 2>/dev/null || true) | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}')"
  if [[ $VALGRIND == 1 ]]; then
    callgrind_annotate --inclusive=yes "$OUT/$cfg.out" >"$OUT/$cfg.annotate-inclusive.txt" 2>/dev/null || true
    callgrind_annotate "$OUT/$cfg.out" >"$OUT/$cfg.annotate.txt" 2>/dev/null || true
  fi
  line="$cfg $API: $ok ok of $N; $total instructions; $((total / N)) instructions/request"
  if [[ $counters != memory ]]; then
    redis_line="$(join -a1 -e0 -o 0,1.2,2.2 <(sort "$OUT/$cfg-redis-after.txt") <(sort "$OUT/$cfg-redis-before.txt") \
      | awk -v n="$N" '{d = $2 - $3; if (d > 0) { printf "%s %.2f/req; ", substr($1, 9), d / n; t += d } } END { printf "all %.2f/req", t / n }')"
    line="$line; redis: $redis_line"
  fi
  echo "$line" | tee -a "$SUMMARY"
done
log "results in $OUT"
