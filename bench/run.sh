#!/usr/bin/env bash
# tollgate load benchmark: the mock provider directly, then through the gateway, in ONE run,
# so every ratio compares numbers taken on the same machine at the same moment.
#
# Usage: bench/run.sh [--direct-only] [--scenarios LIST] [--no-build] [--quick]
#   --direct-only      only the mock provider (no gateway needed; tests the load generator)
#   --scenarios LIST   gateway scenarios, comma-separated (default: plain,policy):
#                        plain         key on a team without policies: the bare proxy path
#                        policy        budget + rate limit + loop guard + model access on the key
#                                      and its team, counters: memory
#                        policy-redis  the same with counters: redis://127.0.0.1:6379
#                        plain-otlp    plain, with span export on (`telemetry.otlp_endpoint`) to a
#                                      local OTLP/HTTP sink run.sh starts (python3)
#                        cache         plain, with the response cache on: every request after the
#                                      first is a hit (the load repeats one body), 100 % hit rate
#                        messages      `/v1/messages` natively to an `anthropic` provider (the mock),
#                                      against the mock's own `/v1/messages` as the direct baseline
#                        responses     `/v1/responses` natively to an `openai` provider, against the
#                                      mock's own `/v1/responses`
#   --no-build         use the binaries already built
#   --quick            short loads: checks the script, not the numbers
# Environment knobs:
#   N_C1=2000 DUR_C64=10 C_HIGH=64 DUR_STREAM=10 C_STREAM=16 WARMUP=300 CHUNKS=16
#   PAIRS=7 N_PAIR=1000   (c1 rounds direct/gateway back to back: the robust c1 overhead)
#   BUSY_POLL_US (unset: the gateway's default)
#   BENCH_PROFILE=release   (dev = debug binaries: only to test the script, numbers meaningless)
#   REDIS_URL=redis://127.0.0.1:6379   BENCH_SCENARIOS (as --scenarios)
#   TOLLGATE_ADMIN_KEY      admin key of the gateway it starts (default: random)
# Output: a markdown table on stdout; raw JSON, configs and logs in bench/results/RUN_ID/.
# It starts the mock and the gateway itself on free 127.0.0.1 ports and stops exactly those
# processes (by PID) on exit. Every load is bounded by a count or a duration and a timeout.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
usage() { awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 2; }

DIRECT_ONLY=0; BUILD=1; QUICK=0
SCENARIOS="${BENCH_SCENARIOS:-plain,policy}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --direct-only) DIRECT_ONLY=1; shift ;;
    --scenarios) SCENARIOS="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown option \`$1\`" >&2; usage ;;
  esac
done
for s in ${SCENARIOS//,/ }; do
  case "$s" in plain|policy|policy-redis|plain-otlp|cache|messages|responses) ;; *) echo "run.sh: unknown scenario \`$s\` (plain, policy, policy-redis, plain-otlp, cache, messages, responses)" >&2; exit 2 ;; esac
done

if [[ $QUICK == 1 ]]; then
  N_C1="${N_C1:-200}"; DUR_C64="${DUR_C64:-1}"; DUR_STREAM="${DUR_STREAM:-1}"; WARMUP="${WARMUP:-20}"
  PAIRS="${PAIRS:-3}"; N_PAIR="${N_PAIR:-100}"
fi
PAIRS="${PAIRS:-7}"; N_PAIR="${N_PAIR:-1000}"
N_C1="${N_C1:-2000}"; DUR_C64="${DUR_C64:-10}"; C_HIGH="${C_HIGH:-64}"
DUR_STREAM="${DUR_STREAM:-10}"; C_STREAM="${C_STREAM:-16}"; WARMUP="${WARMUP:-300}"; CHUNKS="${CHUNKS:-16}"
PROFILE="${BENCH_PROFILE:-release}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
ADMIN_KEY="${TOLLGATE_ADMIN_KEY:-bench-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
UPSTREAM_KEY="sk-bench-upstream-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
CLK_TCK="$(getconf CLK_TCK)"

RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$ROOT/bench/results/$RUN_ID"
mkdir -p "$OUT"
log() { echo "[bench] $*" >&2; }

# ---- processes we start, stopped by PID on any exit ----------------------------------------
declare -a PIDS=()
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build ------------------------------------------------------------------------------------
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ $PROFILE == release ]]; then BIN="$TARGET_DIR/release"; PROFILE_FLAG=(--release); else BIN="$TARGET_DIR/debug"; PROFILE_FLAG=(); fi
PACKAGES=(-p mock-provider -p tollgate-bench)
[[ $DIRECT_ONLY == 1 ]] || PACKAGES+=(-p tollgate)
if [[ $BUILD == 1 ]]; then
  log "building (${PROFILE}): ${PACKAGES[*]}"
  (cd "$ROOT" && cargo build "${PROFILE_FLAG[@]}" "${PACKAGES[@]}" >&2)
fi
for b in mock-provider tollgate-bench; do [[ -x "$BIN/$b" ]] || { echo "run.sh: \`$BIN/$b\` is missing (drop --no-build)" >&2; exit 1; }; done
[[ $DIRECT_ONLY == 1 || -x "$BIN/tollgate" ]] || { echo "run.sh: \`$BIN/tollgate\` is missing (drop --no-build)" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
now_ns() { date +%s%N; }
# Ticks every CPU of the machine spent busy (user, nice, system, irq, softirq, steal).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }

# ---- the mock provider ----------------------------------------------------------------------
"$BIN/mock-provider" --listen 127.0.0.1:0 --chunks "$CHUNKS" --api-key "$UPSTREAM_KEY" >"$OUT/mock.log" 2>&1 &
MOCK_PID=$!; PIDS+=("$MOCK_PID")
MOCK_URL=""
for _ in $(seq 1 100); do
  MOCK_URL="$(awk '/listening on/ {print $NF; exit}' "$OUT/mock.log")"
  [[ -n "$MOCK_URL" ]] && break
  kill -0 "$MOCK_PID" 2>/dev/null || { cat "$OUT/mock.log" >&2; echo "run.sh: the mock provider did not start" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$MOCK_URL" ]] || { echo "run.sh: the mock provider printed no address within 10 s" >&2; exit 1; }
log "mock provider at $MOCK_URL (pid $MOCK_PID)"

# run_load NAME SCENARIO URL AUTH_HEADER TARGET_PID [API]
# Runs one load scenario (c1 | c64 | stream) and writes $OUT/NAME-SCENARIO.json: the load
# generator's report plus the CPU the target (and the mock) used during the invocation.
# API (chat | messages | responses, default chat) picks the path, body and stream end.
run_load() {
  local name="$1" scenario="$2" url="$3" auth="$4" target_pid="$5" api="${6:-chat}" args outer path model
  case "$api" in
    chat) path="chat/completions"; model="gpt-4o-mini" ;;
    messages) path="messages"; model="claude-sonnet-4-5" ;;
    responses) path="responses"; model="gpt-4o-mini" ;;
  esac
  case "$scenario" in
    c1) args=(-c 1 -n "$N_C1"); outer=$((120 + N_C1 / 100)) ;;
    c64) args=(-c "$C_HIGH" -d "$DUR_C64"); outer=$((120 + DUR_C64)) ;;
    stream) args=(--stream -c "$C_STREAM" -d "$DUR_STREAM"); outer=$((120 + DUR_STREAM)) ;;
  esac
  local t0 g0 m0 a0 t1 g1 m1 a1 raw="$OUT/$name-$scenario.raw.json"
  t0=$(now_ns); g0=$(cpu_ticks "$target_pid"); m0=$(cpu_ticks "$MOCK_PID"); a0=$(machine_ticks)
  timeout "$outer" "$BIN/tollgate-bench" --url "$url/$path" --api "$api" --model "$model" -H "$auth" \
    --warmup "$WARMUP" --timeout-s 30 --json "${args[@]}" >"$raw"
  t1=$(now_ns); g1=$(cpu_ticks "$target_pid"); m1=$(cpu_ticks "$MOCK_PID"); a1=$(machine_ticks)
  jq --argjson wall_ns $((t1 - t0)) --argjson tgt $((g1 - g0)) --argjson mock $((m1 - m0)) \
     --argjson all $((a1 - a0)) --argjson same "$([[ $target_pid == "$MOCK_PID" ]] && echo true || echo false)" \
     --argjson hz "$CLK_TCK" --argjson warmup "$WARMUP" \
     --arg name "$name" --arg scenario "$scenario" '
    . as $r
    | ($r.ok + $r.error_count + $warmup) as $sent
    | $r + {name: $name, scenario: $scenario,
            target_cpu_pct: (($tgt / $hz) / ($wall_ns / 1e9) * 1000 | round / 10),
            target_cpu_us_per_req: (if $sent > 0 then ($tgt / $hz * 1e6 / $sent | round) else null end),
            mock_cpu_pct: (($mock / $hz) / ($wall_ns / 1e9) * 1000 | round / 10),
            machine_busy_pct: (($all / $hz) / ($wall_ns / 1e9) * 1000 | round / 10)}
    # CPU of everything else on the machine (other work, the kernel): a large
    # value means the run shared the cores and its numbers are suspect.
    | . + {other_cpu_pct: ([0, .machine_busy_pct - .target_cpu_pct - (if $same then 0 else .mock_cpu_pct end)
                             - ((.bench_cpu_ms // 0) / ($wall_ns / 1e6) * 100)] | max | round)}' \
    "$raw" >"$OUT/$name-$scenario.json"
  rm -f "$raw"
  jq -r '"  \(.name) \(.scenario): \(.ok) ok, \(.error_count) errors, \(.rps) req/s, p50 \(.latency_us.p50) µs, p99 \(.latency_us.p99) µs, target cpu \(.target_cpu_pct)%, other cpu \(.other_cpu_pct)%"' \
    "$OUT/$name-$scenario.json" >&2
}

# pair_rounds OUTFILE URL_A AUTH_A URL_B AUTH_B
# PAIRS rounds, each a short c1 load against A and then the same load against B, back to
# back. This VM's c1 latency drifts by tens of µs over minutes; a difference taken within
# one round does not. Writes OUTFILE: every round's two p50s and the median of B − A.
pair_rounds() {
  local file="$1" url_a="$2" auth_a="$3" url_b="$4" auth_b="$5" i a b
  local -a base=() target=()
  for i in $(seq 1 "$PAIRS"); do
    a=$(timeout 120 "$BIN/tollgate-bench" --url "$url_a/chat/completions" -H "$auth_a" \
          --warmup 100 --timeout-s 30 --json -c 1 -n "$N_PAIR" | jq '.latency_us.p50')
    b=$(timeout 120 "$BIN/tollgate-bench" --url "$url_b/chat/completions" -H "$auth_b" \
          --warmup 100 --timeout-s 30 --json -c 1 -n "$N_PAIR" | jq '.latency_us.p50')
    base+=("$a"); target+=("$b")
  done
  jq -n --argjson a "[$(IFS=,; echo "${base[*]}")]" --argjson b "[$(IFS=,; echo "${target[*]}")]" '
    [range(0; $a | length) | $b[.] - $a[.]] as $diff
    | {base_p50: $a, target_p50: $b, added_p50: $diff,
       median_added_p50: ($diff | sort | .[(length - 1) / 2 | floor])}' >"$file"
}

# run_pairs SCENARIO URL AUTH_HEADER: the c1 overhead over the mock, in paired rounds.
# Writes $OUT/SCENARIO-pairs.json.
run_pairs() {
  local scenario="$1" url="$2" auth="$3" file="$OUT/$1-pairs.json"
  pair_rounds "$file" "$MOCK_URL" "Authorization: Bearer $UPSTREAM_KEY" "$url" "$auth"
  jq --arg name "$scenario" '{name: $name, scenario: "pairs", direct_p50: .base_p50, gateway_p50: .target_p50} + .' \
    "$file" >"$file.tmp" && mv "$file.tmp" "$file"
  jq -r '"  \(.name) c1 pairs: added p50 per round \(.added_p50) µs, median \(.median_added_p50) µs"' "$file" >&2
}

# run_budget_pairs SCENARIO URL PLAIN_AUTH POLICY_AUTH: what the policy path costs over the
# plain proxy, measured in ONE gateway process: a key on the team without policies against
# a key with every policy, in paired c1 rounds. Writes $OUT/SCENARIO-budget.json.
run_budget_pairs() {
  local scenario="$1" url="$2" file="$OUT/$1-budget.json"
  pair_rounds "$file" "$url" "$3" "$url" "$4"
  jq --arg name "$scenario" '{name: $name, scenario: "budget"} + .' "$file" >"$file.tmp" && mv "$file.tmp" "$file"
  jq -r '"  \(.name) policy path over plain (same gateway): per round \(.added_p50) µs, median \(.median_added_p50) µs"' "$file" >&2
}

run_all_loads() {
  local name="$1" url="$2" auth="$3" pid="$4" api="${5:-chat}" s
  for s in c1 c64 stream; do run_load "$name" "$s" "$url" "$auth" "$pid" "$api"; done
}

log "direct: the mock provider alone"
run_all_loads direct "$MOCK_URL" "Authorization: Bearer $UPSTREAM_KEY" "$MOCK_PID"
echo "{\"name\": \"direct\", \"peak_rss_kib\": $(peak_rss_kib "$MOCK_PID")}" >"$OUT/direct-rss.json"

# ---- the gateway, one process per scenario ---------------------------------------------------
write_config() {
  local file="$1" port="$2" counters="$3" telemetry="${4:-}" cache="${5:-false}"
  cat >"$file" <<YAML
listen: 127.0.0.1:$port
admin_key: \${TOLLGATE_ADMIN_KEY}
store: sqlite://tollgate.db
counters: $counters
${BUSY_POLL_US:+busy_poll_us: $BUSY_POLL_US}
cache: { enabled: $cache }
providers:
  - name: mock
    kind: openai
    base_url: $MOCK_URL
    api_key: \${BENCH_UPSTREAM_KEY}
    timeout_s: 30
  - name: mock-claude
    kind: anthropic
    base_url: $MOCK_URL
    api_key: \${BENCH_UPSTREAM_KEY}
    timeout_s: 30
models:
  - name: claude-sonnet-4-5
    targets:
      - provider: mock-claude
        model: claude-sonnet-4-5
    max_output_tokens: 4096
  - name: gpt-4o-mini
    targets:
      - provider: mock
        model: gpt-4o-mini
    price: { input_per_mtok: 0.15, output_per_mtok: 0.60 }
    max_output_tokens: 4096
# Limits far above what the load reaches: the policy path is exercised on every
# request (reserve, check, settle) without ever rejecting one.
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
$telemetry
YAML
}

# otlp_sink PORT: an OTLP/HTTP collector that accepts every export and keeps nothing.
otlp_sink() {
  python3 - "$1" <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
  PIDS+=("$!")
}

run_gateway_scenario() {
  local scenario="$1" counters="memory" team="bench-plain" cache=false dir port url pid key plain_key telemetry="" sink
  local -a key_args=()
  case "$scenario" in
    policy) team="bench-policy" ;;
    policy-redis) team="bench-policy"; counters="$REDIS_URL" ;;
    plain-otlp) sink="$(free_port)"; otlp_sink "$sink"; telemetry="telemetry: { otlp_endpoint: 'http://127.0.0.1:$sink' }" ;;
    cache) cache=true ;;
  esac
  if [[ $team == bench-policy ]]; then
    key_args=(--models gpt-4o-mini --budget-usd 1000000 --period daily --rpm 1000000000 --tpm 1000000000000)
  fi
  dir="$OUT/gw-$scenario"; mkdir -p "$dir"
  port="$(free_port)"; url="http://127.0.0.1:$port"
  write_config "$dir/tollgate.yaml" "$port" "$counters" "$telemetry" "$cache"
  (cd "$dir" && TOLLGATE_ADMIN_KEY="$ADMIN_KEY" BENCH_UPSTREAM_KEY="$UPSTREAM_KEY" \
     exec "$BIN/tollgate" serve --config "$dir/tollgate.yaml" >"$dir/gateway.log" 2>&1) &
  pid=$!; PIDS+=("$pid")
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$url/healthz" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/gateway.log" >&2; echo "run.sh: the gateway exited at start (scenario $scenario)" >&2; exit 1; }
    sleep 0.1
  done
  curl -fsS -o /dev/null "$url/healthz" || { echo "run.sh: the gateway did not become healthy within 30 s" >&2; exit 1; }
  key="$(TOLLGATE_URL="$url" TOLLGATE_ADMIN_KEY="$ADMIN_KEY" "$BIN/tollgate" keys create --team "$team" --name bench "${key_args[@]}" \
          | grep -oE 'sk-tg-[A-Za-z0-9_-]+' | head -1)"
  [[ -n "$key" ]] || { echo "run.sh: \`tollgate keys create --team $team\` printed no key" >&2; exit 1; }
  log "gateway ($scenario, counters $counters) at $url (pid $pid)"
  case "$scenario" in
    messages|responses)
      # The same API straight at the mock, in this run, as the baseline.
      run_all_loads "direct-$scenario" "$MOCK_URL" "Authorization: Bearer $UPSTREAM_KEY" "$MOCK_PID" "$scenario"
      run_all_loads "$scenario" "$url/v1" "Authorization: Bearer $key" "$pid" "$scenario"
      echo "{\"name\": \"$scenario\", \"peak_rss_kib\": $(peak_rss_kib "$pid")}" >"$OUT/$scenario-rss.json"
      stop_pid "$pid"
      return ;;
  esac
  run_all_loads "$scenario" "$url/v1" "Authorization: Bearer $key" "$pid"
  run_pairs "$scenario" "$url/v1" "Authorization: Bearer $key"
  if [[ $team == bench-policy ]]; then
    plain_key="$(TOLLGATE_URL="$url" TOLLGATE_ADMIN_KEY="$ADMIN_KEY" "$BIN/tollgate" keys create --team bench-plain --name bench-plain \
                 | grep -oE 'sk-tg-[A-Za-z0-9_-]+' | head -1)"
    [[ -n "$plain_key" ]] || { echo "run.sh: \`tollgate keys create --team bench-plain\` printed no key" >&2; exit 1; }
    run_budget_pairs "$scenario" "$url/v1" "Authorization: Bearer $plain_key" "Authorization: Bearer $key"
  fi
  if [[ $cache == true ]]; then
    # The hit rate the gateway itself counted: proof the loads were served from the cache.
    curl -fsS -H "Authorization: Bearer $ADMIN_KEY" "$url/metrics" \
      | awk -v name="$scenario" '/^tollgate_cache_requests_total/ { if ($0 ~ /result="hit"/) h += $NF; else m += $NF }
          END { printf "{\"name\": \"%s\", \"hits\": %d, \"misses\": %d}\n", name, h, m }' >"$OUT/$scenario-cache.json"
    jq -r '"  \(.name): \(.hits) cache hits, \(.misses) misses"' "$OUT/$scenario-cache.json" >&2
  fi
  echo "{\"name\": \"$scenario\", \"peak_rss_kib\": $(peak_rss_kib "$pid")}" >"$OUT/$scenario-rss.json"
  stop_pid "$pid"
}

if [[ $DIRECT_ONLY == 0 ]]; then
  for s in ${SCENARIOS//,/ }; do run_gateway_scenario "$s"; done
fi

# ---- the report ---------------------------------------------------------------------------------
python3 - "$OUT" >"$OUT/results.md" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
runs, rss, pairs, budget, cache = {}, {}, {}, {}, {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    d = json.load(open(f))
    if f.endswith("-rss.json"):
        rss[d["name"]] = d["peak_rss_kib"]
    elif f.endswith("-pairs.json"):
        pairs[d["name"]] = d
    elif f.endswith("-budget.json"):
        budget[d["name"]] = d
    elif f.endswith("-cache.json"):
        cache[d["name"]] = d
    else:
        runs.setdefault(d["name"], {})[d["scenario"]] = d
names = ["direct"] + [n for n in ("plain", "plain-otlp", "policy", "policy-redis", "cache") if n in runs]
def lat(r, q): return r["latency_us"][q] if r.get("latency_us") else None
def us(v): return "–" if v is None else f"{v}"
def msf(v): return "–" if v is None else f"{v / 1000:.2f}"
def errs(n):
    e = {}
    for r in runs[n].values():
        for k, v in r["errors"].items(): e[k] = e.get(k, 0) + v
    return ", ".join(f"{k}: {v}" for k, v in sorted(e.items())) or "0"
c1, c64, st = runs["direct"]["c1"], runs["direct"]["c64"], runs["direct"]["stream"]
print(f"Run {os.path.basename(out)}: c1 = {c1['ok'] + c1['error_count']} requests at concurrency 1; "
      f"c64 = {c64['duration_s']} s at concurrency {c64['concurrency']}; "
      f"stream = {st['duration_s']} s at concurrency {st['concurrency']}.\n")
print("| target | c1 p50 µs | c1 p99 µs | c64 req/s | c64 p50 ms | c64 p99 ms | stream/s | stream p50 ms | stream p99 ms | CPU % (c64) | CPU µs/req (c64) | peak RSS MiB | other CPU % (max) | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for n in names:
    r = runs[n]
    label = "direct (mock)" if n == "direct" else f"gateway: {n}"
    print(f"| {label} | {us(lat(r['c1'], 'p50'))} | {us(lat(r['c1'], 'p99'))} | {r['c64']['rps']:.0f} | "
          f"{msf(lat(r['c64'], 'p50'))} | {msf(lat(r['c64'], 'p99'))} | {r['stream']['rps']:.0f} | "
          f"{msf(lat(r['stream'], 'p50'))} | {msf(lat(r['stream'], 'p99'))} | {r['c64']['target_cpu_pct']} | "
          f"{us(r['c64']['target_cpu_us_per_req'])} | {rss.get(n, 0) / 1024:.1f} | "
          f"{max(x.get('other_cpu_pct', 0) for x in r.values())} | {errs(n)} |")
gws = [n for n in names if n != "direct"]
if gws:
    d = runs["direct"]
    def ratio(a, b): return "–" if not a or not b else f"{a / b:.2f}x"
    print("\nOverhead against the direct baseline of this run (gateway − direct; gateway / direct):\n")
    print("| scenario | c1 p50 added µs (paired rounds: median [min–max]) | c1 p50 added µs (single load) | c1 p50 ratio | c1 p99 added µs | c64 req/s ratio | c64 p99 ratio | stream p50 ratio | issue targets (added p50 ≤100 µs, Redis ≤250 µs; ≥15000 req/s; ≤50 MiB plain) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in gws:
        g = runs[n]
        add50 = lat(g["c1"], "p50") - lat(d["c1"], "p50") if lat(g["c1"], "p50") else None
        add99 = lat(g["c1"], "p99") - lat(d["c1"], "p99") if lat(g["c1"], "p99") else None
        p = pairs.get(n)
        paired = p["median_added_p50"] if p else add50
        shown = f"{p['median_added_p50']} [{min(p['added_p50'])}–{max(p['added_p50'])}]" if p else "–"
        checks = [
            ("added p50", paired is not None and paired <= (250 if n == "policy-redis" else 100)),
            # Issue 5 asks only to report Redis throughput; 15,000 is the in-process target.
            ("req/s", g["c64"]["rps"] >= 15000 if n not in ("policy-redis", "cache") else None),
            # ≤ 50 MiB is the core gateway's target (issue 2); with policies the BPE tables add ~45 MiB.
            ("RSS", rss.get(n, 0) / 1024 <= 50 if n == "plain" else None),
        ]
        verdict = ", ".join(f"{k} {'–' if ok is None else 'ok' if ok else 'MISSED'}" for k, ok in checks)
        print(f"| {n} | {shown} | {us(add50)} | {ratio(lat(g['c1'], 'p50'), lat(d['c1'], 'p50'))} | {us(add99)} | "
              f"{ratio(g['c64']['rps'], d['c64']['rps'])} | {ratio(lat(g['c64'], 'p99'), lat(d['c64'], 'p99'))} | "
              f"{ratio(lat(g['stream'], 'p50'), lat(d['stream'], 'p50'))} | {verdict} |")
for n, c in cache.items():
    total = c["hits"] + c["misses"]
    rate = f"{100 * c['hits'] / total:.2f} %" if total else "–"
    print(f"\nResponse cache ({n}): {c['hits']} hits, {c['misses']} misses ({rate} hit rate, as the gateway counted); "
          f"c64 req/s {runs[n]['c64']['rps']:.0f} = {runs[n]['c64']['rps'] / runs['direct']['c64']['rps']:.2f}x the direct mock of this run.")
agents = [n for n in ("messages", "responses") if n in runs and f"direct-{n}" in runs]
if agents:
    print("\nAgent APIs, natively passed through, against the mock's own endpoint in this run (gateway / direct):\n")
    # Gateway CPU per request at c64, against chat on the plain proxy of the
    # same run when it ran: "the passthrough path costs no more than chat".
    chat_cpu = runs["plain"]["c64"].get("target_cpu_us_per_req") if "plain" in runs else None
    print("| API | direct c1 p50 µs | gateway c1 p50 µs | c1 p50 ratio | c64 req/s ratio | stream p50 ratio | gateway CPU µs/req (c64) | over chat (plain) CPU µs/req | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    def r2(a, b): return "–" if not a or not b else f"{a / b:.2f}x"
    for n in agents:
        g, d = runs[n], runs[f"direct-{n}"]
        cpu = g["c64"].get("target_cpu_us_per_req")
        print(f"| /v1/{n} | {us(lat(d['c1'], 'p50'))} | {us(lat(g['c1'], 'p50'))} | "
              f"{r2(lat(g['c1'], 'p50'), lat(d['c1'], 'p50'))} | {r2(g['c64']['rps'], d['c64']['rps'])} | "
              f"{r2(lat(g['stream'], 'p50'), lat(d['stream'], 'p50'))} | {us(cpu)} | {r2(cpu, chat_cpu)} | {errs(n)} |")
if budget:
    print("\nThe policy path over the plain proxy, in one gateway process (c1 p50 of a key with every policy "
          "minus a key on the team without policies, paired rounds; target ≤ 20 µs with in-process counters):\n")
    print("| scenario | added µs: median [min–max] | rounds (plain → policy p50 µs) | target |")
    print("|---|---|---|---|")
    for n, b in budget.items():
        rounds = ", ".join(f"{a}→{t}" for a, t in zip(b["base_p50"], b["target_p50"]))
        # The ≤ 20 µs target is the in-process budget path's; Redis has its own (above).
        ok = ("ok" if b["median_added_p50"] <= 20 else "MISSED") if n == "policy" else "–"
        print(f"| {n} | {b['median_added_p50']} [{min(b['added_p50'])}–{max(b['added_p50'])}] | {rounds} | {ok} |")
PY
cat "$OUT/results.md"
log "raw results in $OUT"
