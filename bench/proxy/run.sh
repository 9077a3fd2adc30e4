#!/usr/bin/env bash
# bench/proxy/run.sh: benchmark HTTP reverse proxies side by side on one
# machine, all on 127.0.0.1:
#
#   wrk -> backend                      (baseline, no proxy)
#   wrk -> HAProxy -> backend
#   wrk -> nginx   -> backend
#   wrk -> Caddy   -> backend           (when caddy is installed)
#   wrk -> tandem's proxy -> backend    (when TANDEM_BIN is set)
#
# For each target it reports req/s, p50/p99 latency, the CPU time and the
# system calls the proxy process (with its threads and child processes)
# used per request under wrk (closed loop, as fast as it goes); then, in a
# second phase, p50/p99 latency at a constant rate (vegeta, open loop),
# where tail latency shows. A gate line says PASS or FAIL for tandem's
# system calls per request. See README.md in this directory for details
# and caveats.
#
# Environment (all optional):
#   DURATION=10s       wrk duration per run (wrk syntax: 10s, 1m)
#   CONNECTIONS=64     wrk connections
#   THREADS=2          wrk threads
#   WARMUP=1s          short wrk run before each measured run (0 = none)
#   PAUSE=2            seconds to pause between runs
#   BASE_PORT=19100    first port to try; the script uses BASE..BASE+19
#   WORKERS=$(nproc)   proxy worker processes/threads (nginx, HAProxy, Go's GOMAXPROCS)
#   READY_TIMEOUT=30   seconds to wait for any server to become ready
#   TANDEM_BIN=        path to the tandem binary: also benchmark tandem's proxy
#   TANDEM_FASTPATH=   tandem's epoll fast path: on, off, both (two tandem agents,
#                      "tandem" with it on and "tandem (plain path)" with it off,
#                      in the same run), or empty for the binary's default
#   RESULTS_DIR=       where raw wrk outputs go (default bench/proxy/results/<time>)
#   KEEP_TMP=0         1 = keep the temp dir (configs, logs, pid files)
#   FORWARD_HEADERS=1  1 = HAProxy, nginx and Caddy add the headers tandem adds
#                      to every request (X-Forwarded-For/-Host/-Proto and
#                      X-Request-Id), so all do the same work; 0 = plain configs
#   SYSCALLS=1         1 = count each proxy's system calls over the wrk run (perf)
#   SYSCALL_GATE=5     the most system calls per request tandem may make (gate line)
#   GATE=0             1 = exit with status 3 when the gate fails
#   CR_RATE=2000       constant-rate phase: requests per second (0 = no such phase)
#   CR_DURATION=30s    constant-rate phase: measured seconds per target
#   CR_WARMUP=3s       constant-rate phase: warm-up at the same rate first
#   CR_CONNECTIONS=64  constant-rate phase: vegeta's keep-alive connections (and workers)
#   CR_ROUNDS=6        constant-rate phase: targets take turns in this many slices of CR_DURATION
#   INSTALL=1          1 = install missing tools (apt-get for wrk, haproxy,
#                      nginx-light, linux-perf, jq; go install for vegeta); 0 = never
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-1s}
PAUSE=${PAUSE:-2}
BASE_PORT=${BASE_PORT:-19100}
WORKERS=${WORKERS:-$(nproc)}
READY_TIMEOUT=${READY_TIMEOUT:-30}
TANDEM_BIN=${TANDEM_BIN:-}
TANDEM_FASTPATH=${TANDEM_FASTPATH:-}
RESULTS_DIR=${RESULTS_DIR:-$SCRIPT_DIR/results/$(date +%Y%m%d-%H%M%S)}
KEEP_TMP=${KEEP_TMP:-0}
FORWARD_HEADERS=${FORWARD_HEADERS:-1}
SYSCALLS=${SYSCALLS:-1}
SYSCALL_GATE=${SYSCALL_GATE:-5}
GATE=${GATE:-0}
CR_RATE=${CR_RATE:-2000}
CR_DURATION=${CR_DURATION:-30s}
CR_WARMUP=${CR_WARMUP:-3s}
CR_CONNECTIONS=${CR_CONNECTIONS:-64}
CR_ROUNDS=${CR_ROUNDS:-6}
INSTALL=${INSTALL:-1}
VEGETA_MODULE=github.com/tsenart/vegeta/v12@v12.13.0

HOST_HEADER=bench                # the Host every request carries (tandem routes on it)
EXPECTED_BODY="hello, world"     # the backend's body, less its trailing newline
CLK_TCK=$(getconf CLK_TCK)

# log never fails: cleanup must go on even if stderr is a broken pipe
# (e.g. Ctrl-C also killed a "| tee" reading it).
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2 2>/dev/null || true; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Process bookkeeping and cleanup
# ---------------------------------------------------------------------------

TMP=$(mktemp -d /tmp/proxybench.XXXXXX)
chmod 755 "$TMP"        # nginx workers drop to "nobody" when started as root
STARTED=()              # pids of every server this script started

# alive PID: true while PID exists and is not a zombie.
alive() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[[ ${s:0:1} != Z ]]
}

# tree_pids PID: PID and all its descendants (processes, not threads: a
# process's /proc stat already covers all its threads).
tree_pids() {
	local -A kids=()
	local pid ppid
	while read -r pid ppid; do
		kids[$ppid]+=" $pid"
	done < <(ps -e -o pid= -o ppid=)
	local queue=("$1") tree=() p
	while ((${#queue[@]})); do
		p=${queue[0]}; queue=("${queue[@]:1}")
		tree+=("$p")
		# shellcheck disable=SC2206
		[[ -n ${kids[$p]:-} ]] && queue+=(${kids[$p]})
	done
	echo "${tree[@]}"
}

# cpu_ticks PID: utime+stime+cutime+cstime (clock ticks) summed over PID and
# its descendants. Each process's figure covers all its threads; cutime and
# cstime add children that already exited and were reaped.
cpu_ticks() {
	local total=0 p s
	local -a f
	for p in $(tree_pids "$1"); do
		s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		s=${s##*) }
		read -r -a f <<<"$s"    # f[0] is field 3 (state); utime is field 14
		total=$((total + f[11] + f[12] + f[13] + f[14]))
	done
	echo "$total"
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	trap '' PIPE HUP
	local pids=() p
	for p in "${STARTED[@]}"; do
		# shellcheck disable=SC2207
		alive "$p" && pids+=($(tree_pids "$p"))
	done
	if ((${#pids[@]})); then
		log "stopping ${#pids[@]} processes: ${pids[*]}"
		kill -TERM "${pids[@]}" 2>/dev/null || true
		for _ in $(seq 50); do      # up to 5 s for a clean exit
			local any=0
			for p in "${pids[@]}"; do alive "$p" && any=1; done
			((any)) || break
			sleep 0.1
		done
		for p in "${pids[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
	fi
	wait 2>/dev/null || true
	if [[ $KEEP_TMP == 1 ]]; then log "temp dir kept: $TMP"; else rm -rf "$TMP"; fi
	exit "$rc"
}
# Any way out (error, Ctrl-C, kill, closed terminal or pipe) runs cleanup.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE

# start NAME CMD...: run CMD in the background, output to $TMP/NAME.log;
# its pid is left in LAST_PID.
start() {
	local name=$1; shift
	"$@" >"$TMP/$name.log" 2>&1 &
	LAST_PID=$!
	STARTED+=("$LAST_PID")
	log "started $name (pid $LAST_PID): $*"
}

# wait_http NAME PID URL [CURL ARGS...]: wait until URL answers 200, at most
# READY_TIMEOUT s; fail early if PID dies. Each try is capped at 1 s.
wait_http() {
	local name=$1 pid=$2 url=$3; shift 3
	local deadline=$((SECONDS + READY_TIMEOUT)) code=000
	while ((SECONDS < deadline)); do
		if ! alive "$pid"; then
			log "$name (pid $pid) exited while starting; last lines of its log:"
			tail -n 20 "$TMP/$name.log" >&2 || true
			return 1
		fi
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)
		[[ $code == 200 ]] && return 0
		sleep 0.2
	done
	log "$name not ready after ${READY_TIMEOUT}s: $url answered HTTP $code (000 = no answer); last lines of its log:"
	tail -n 20 "$TMP/$name.log" >&2 || true
	return 1
}

# check_body NAME URL: the target must proxy to the backend (right body).
check_body() {
	local body
	body=$(curl -s --max-time 2 -H "Host: $HOST_HEADER" "$2" || true)
	if [[ $body != "$EXPECTED_BODY" ]]; then
		log "$1 at $2 did not return the backend's body; got: ${body:0:200}"
		return 1
	fi
}

# ---------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------

# port_free PORT: nothing listens on PORT (TCP or UDP) on any address.
port_free() {
	if command -v ss >/dev/null; then
		[[ -z $(ss -Hltun "( sport = :$1 )" 2>/dev/null) ]]
	else
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 1; fi
	fi
}

# Port layout relative to the base: 0 backend, 1 HAProxy, 2 nginx, 3 Caddy,
# 10..14 tandem (api, peer, store, dns, proxy), 15..19 the second tandem
# (TANDEM_FASTPATH=both).
OFFSETS=(0 1 2 3 10 11 12 13 14 15 16 17 18 19)
pick_base() {
	local base=$BASE_PORT off ok
	for _ in $(seq 20); do
		ok=1
		for off in "${OFFSETS[@]}"; do
			port_free $((base + off)) || { ok=0; break; }
		done
		((ok)) && { echo "$base"; return 0; }
		base=$((base + 20))
	done
	return 1
}

# ---------------------------------------------------------------------------
# Helpers for results
# ---------------------------------------------------------------------------

# secs DURATION: wrk duration ("10s", "1m", "1h", "10") in seconds.
secs() {
	[[ $1 =~ ^([0-9]+)([smh]?)$ ]] || die "bad duration: $1 (use e.g. 10s or 1m)"
	case ${BASH_REMATCH[2]} in
		m) echo $((BASH_REMATCH[1] * 60)) ;;
		h) echo $((BASH_REMATCH[1] * 3600)) ;;
		*) echo "${BASH_REMATCH[1]}" ;;
	esac
}

# render TEMPLATE OUT PORT: fill in a config template's @NAME@ placeholders.
render() {
	local fwd='s|^#FWD||'
	[[ $FORWARD_HEADERS == 1 ]] || fwd='/^#FWD/d'
	sed -e "$fwd" -e "s|@TMP@|$TMP|g" -e "s|@WORKERS@|$WORKERS|g" \
		-e "s|@PORT@|$3|g" -e "s|@BACKEND_PORT@|$BACKEND_PORT|g" "$1" >"$2"
	cp "$2" "$RESULTS_DIR/"
}

# parse_wrk FILE: print "rps p50_ms p99_ms requests errors" from wrk --latency output.
parse_wrk() {
	awk '
		function ms(v,   n, u) {
			n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
			if (u == "us") return n / 1000
			if (u == "ms") return n
			if (u == "s")  return n * 1000
			if (u == "m")  return n * 60000
			return n
		}
		/^Requests\/sec:/                  { rps = $2 }
		/ requests in /                    { reqs = $1 }
		/^[ \t]+50%[ \t]/                  { p50 = ms($2) }
		/^[ \t]+99%[ \t]/                  { p99 = ms($2) }
		/^[ \t]*Socket errors:/            { gsub(/,/, ""); errs += $4 + $6 + $8 + $10 }
		/^[ \t]*Non-2xx or 3xx responses:/ { errs += $NF }
		END { printf "%s %s %s %s %d\n", rps == "" ? 0 : rps, p50 == "" ? "n/a" : p50,
		      p99 == "" ? "n/a" : p99, reqs == "" ? 0 : reqs, errs }
	' "$1"
}

# us_per_req TICKS REQUESTS
us_per_req() {
	awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" \
		'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else printf "n/a" }'
}

fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "n/a") print v; else printf "%.3f ms", v }'; }

per_req() { awk -v c="$1" -v n="$2" 'BEGIN { if (n > 0 && c != "") printf "%.2f", c / n; else printf "n/a" }'; }

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

# need_apt CMD PACKAGE: install PACKAGE with apt-get when CMD is missing.
APT_UPDATED=0
need_apt() {
	command -v "$1" >/dev/null && return 0
	[[ $INSTALL == 1 ]] || die "$1 is not installed (apt-get install -y $2), and INSTALL=0"
	((EUID == 0)) || die "$1 is not installed; run as root so that the script can install it, or: apt-get install -y $2"
	command -v apt-get >/dev/null || die "$1 is not installed and there is no apt-get; install $2 by hand"
	log "installing $2 (for $1)"
	if ((!APT_UPDATED)); then
		apt-get update -qq >"$TMP/apt.log" 2>&1 || { tail -n 20 "$TMP/apt.log" >&2; die "apt-get update failed"; }
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >>"$TMP/apt.log" 2>&1 ||
		{ tail -n 20 "$TMP/apt.log" >&2; die "apt-get install $2 failed"; }
	command -v "$1" >/dev/null || die "installed $2, but $1 is still not on PATH"
}

# find_vegeta: VEGETA is vegeta's path, installed with go install if missing.
find_vegeta() {
	local gobin
	gobin=$(go env GOBIN)
	[[ -n $gobin ]] || gobin=$(go env GOPATH)/bin
	VEGETA=$(command -v vegeta || true)
	[[ -n $VEGETA ]] || { [[ -x $gobin/vegeta ]] && VEGETA=$gobin/vegeta; } || true
	[[ -n $VEGETA ]] && return 0
	[[ $INSTALL == 1 ]] || die "vegeta is not installed (go install $VEGETA_MODULE), and INSTALL=0"
	log "installing vegeta: go install $VEGETA_MODULE"
	go install "$VEGETA_MODULE" >"$TMP/vegeta-install.log" 2>&1 ||
		{ tail -n 20 "$TMP/vegeta-install.log" >&2; die "go install $VEGETA_MODULE failed"; }
	VEGETA=$gobin/vegeta
	[[ -x $VEGETA ]] || die "go install $VEGETA_MODULE succeeded but $VEGETA is not there"
}

# check_perf: perf must be able to count system calls of a process here.
check_perf() {
	local out
	if ! out=$(perf stat -e raw_syscalls:sys_enter -x, -- true 2>&1) || [[ $out != *raw_syscalls:sys_enter* ]] ||
		[[ $out == *"not supported"* ]]; then
		die "perf cannot count system calls here (perf stat -e raw_syscalls:sys_enter): $out
       It needs root or kernel.perf_event_paranoid <= -1, and tracefs. Set SYSCALLS=0 to run without the count."
	fi
}

# ---------------------------------------------------------------------------
# Counting system calls
# ---------------------------------------------------------------------------

# sys_start PID: attach perf to PID and its descendants (every thread, and
# threads started later) with counting off; sys_on and sys_off switch it
# on and off around a measured run, each acknowledged by perf, so the
# count covers that run exactly; sys_stop ends perf and prints the count.
# raw_syscalls:sys_enter fires once per system call entered.
sys_start() {
	local pids
	pids=$(tree_pids "$1")
	rm -f "$TMP/perf.ctl" "$TMP/perf.ack" "$TMP/perf.out"
	mkfifo "$TMP/perf.ctl" "$TMP/perf.ack"
	exec {PERF_CTL}<>"$TMP/perf.ctl" {PERF_ACK}<>"$TMP/perf.ack"
	perf stat -D -1 -e raw_syscalls:sys_enter -x, -o "$TMP/perf.out" \
		--control "fd:$PERF_CTL,$PERF_ACK" -p "${pids// /,}" >"$TMP/perf.log" 2>&1 &
	PERF_PID=$!
	STARTED+=("$PERF_PID")
}
sys_ctl() {
	local ack=""
	echo "$1" >&"$PERF_CTL"
	read -r -t 10 -u "$PERF_ACK" ack || true
	[[ $ack == ack ]] || { cat "$TMP/perf.log" >&2; die "perf did not acknowledge '$1'"; }
}
sys_on() { sys_ctl enable; }
sys_off() { sys_ctl disable; }
# sys_stop sets SYS_CALLS to the count ("" if perf gave none).
sys_stop() {
	kill -INT "$PERF_PID" 2>/dev/null || true
	wait "$PERF_PID" 2>/dev/null || true
	exec {PERF_CTL}>&- {PERF_ACK}>&-
	SYS_CALLS=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print ($1 ~ /^[0-9]+$/) ? $1 : "" }' "$TMP/perf.out")
	[[ -n $SYS_CALLS ]] || log "WARNING: perf gave no system call count: $(cat "$TMP/perf.out" "$TMP/perf.log")"
}

# count_threads PID: threads of PID and its descendants.
count_threads() {
	local n=0 p t
	for p in $(tree_pids "$1"); do
		for t in /proc/"$p"/task/*; do [[ -e $t ]] && n=$((n + 1)); done
	done
	echo "$n"
}

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

command -v go >/dev/null || die "go is not installed (needed to build backend/)"
need_apt curl curl
need_apt ps procps
need_apt ss iproute2
need_apt wrk wrk
need_apt haproxy haproxy
need_apt nginx nginx-light
if [[ $SYSCALLS == 1 ]]; then
	need_apt perf linux-perf
	check_perf
fi
if [[ $CR_RATE != 0 ]]; then
	need_apt jq jq
	find_vegeta
	CR_DURATION_S=$(secs "$CR_DURATION")
	[[ $CR_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "CR_ROUNDS=$CR_ROUNDS: want a whole number of rounds, 1 or more"
	[[ $CR_WARMUP == 0 ]] || secs "$CR_WARMUP" >/dev/null
fi
DURATION_S=$(secs "$DURATION")
[[ $WARMUP == 0 ]] || secs "$WARMUP" >/dev/null

mkdir -p "$RESULTS_DIR"
BASE=$(pick_base) || die "no free block of ports found from BASE_PORT=$BASE_PORT"
BACKEND_PORT=$BASE
log "ports: base $BASE; temp dir $TMP; results $RESULTS_DIR"

# Targets, in run order. STATUS is "ok" or why the target is skipped.
T_NAME=() T_SLUG=() T_URL=() T_PID=() T_STATUS=()
add_target() { T_NAME+=("$1"); T_SLUG+=("$2"); T_URL+=("$3"); T_PID+=("$4"); T_STATUS+=("$5"); }

# 1. The backend.
log "building backend"
(cd "$SCRIPT_DIR/backend" && go build -o "$TMP/backend" .) || die "backend build failed"
GOMAXPROCS=$WORKERS start backend "$TMP/backend" -addr "127.0.0.1:$BACKEND_PORT"
BACKEND_PID=$LAST_PID
wait_http backend "$BACKEND_PID" "http://127.0.0.1:$BACKEND_PORT/" || die "backend did not start"
add_target "direct (no proxy)" direct "http://127.0.0.1:$BACKEND_PORT/" "$BACKEND_PID" ok

# setup_proxy NAME SLUG PORT PID: wait for a proxy and register it as a target.
setup_proxy() {
	local status=ok
	if ! wait_http "$2" "$4" "http://127.0.0.1:$3/"; then
		status="failed to start (see log above)"
	elif ! check_body "$1" "http://127.0.0.1:$3/"; then
		status="failed: wrong response"
	fi
	add_target "$1" "$2" "http://127.0.0.1:$3/" "$4" "$status"
}

# 2. HAProxy: one process, WORKERS threads, foreground (-db).
HAPROXY_PORT=$((BASE + 1))
if command -v haproxy >/dev/null; then
	render "$SCRIPT_DIR/haproxy.cfg.tmpl" "$TMP/haproxy.cfg" "$HAPROXY_PORT"
	start haproxy haproxy -db -f "$TMP/haproxy.cfg"
	setup_proxy HAProxy haproxy "$HAPROXY_PORT" "$LAST_PID"
else
	add_target HAProxy haproxy "" "" "not installed"
fi

# 3. nginx: master + WORKERS worker processes, foreground (daemon off).
NGINX_PORT=$((BASE + 2))
if command -v nginx >/dev/null; then
	render "$SCRIPT_DIR/nginx.conf.tmpl" "$TMP/nginx.conf" "$NGINX_PORT"
	mkdir -p "$TMP/nginx"
	start nginx nginx -p "$TMP/nginx/" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log"
	setup_proxy nginx nginx "$NGINX_PORT" "$LAST_PID"
else
	add_target nginx nginx "" "" "not installed"
fi

# 4. Caddy: one Go process with GOMAXPROCS=WORKERS; its state goes to TMP.
CADDY_PORT=$((BASE + 3))
if command -v caddy >/dev/null; then
	render "$SCRIPT_DIR/Caddyfile.tmpl" "$TMP/Caddyfile" "$CADDY_PORT"
	mkdir -p "$TMP/caddy"
	GOMAXPROCS=$WORKERS HOME="$TMP/caddy" XDG_DATA_HOME="$TMP/caddy" XDG_CONFIG_HOME="$TMP/caddy" \
		start caddy caddy run --config "$TMP/Caddyfile" --adapter caddyfile
	setup_proxy Caddy caddy "$CADDY_PORT" "$LAST_PID"
else
	add_target Caddy caddy "" "" "not installed"
fi

# 5. tandem (optional): a one-node cluster whose proxy routes Host "bench"
# to the backend, registered as a passing instance of service "bench".
# With TANDEM_FASTPATH=both a second agent (slug tandem-plain, ports
# BASE+15..19) runs with the fast path off, the first with it on.
TANDEM_FAILED=0
# setup_tandem SLUG PORT FASTPATH: start an agent, its proxy on PORT+4.
setup_tandem() {
	local slug=$1 p=$2 fastpath=$3 pid code
	local api="http://127.0.0.1:$p" proxy_url="http://127.0.0.1:$((p + 4))/"
	TANDEM_URL=$proxy_url
	[[ -x $TANDEM_BIN ]] || { TANDEM_WHY="TANDEM_BIN=$TANDEM_BIN is not an executable file"; return 1; }
	mkdir -p "$TMP/$slug"
	local env=(GOMAXPROCS="$WORKERS")
	[[ -n $fastpath ]] && env+=(TANDEM_PROXY_FASTPATH="$fastpath")
	start "$slug" env "${env[@]}" "$TANDEM_BIN" agent --name b1 --data-dir "$TMP/$slug" --voters 1 \
		--bind 127.0.0.1 --advertise 127.0.0.1 \
		--api-port "$p" --peer-port $((p + 1)) --store-port $((p + 2)) \
		--dns-port $((p + 3)) --proxy-port $((p + 4))
	pid=$LAST_PID
	TANDEM_PID=$pid
	wait_http tandem "$pid" "$api/v1/health" ||
		{ TANDEM_WHY="agent not healthy at $api/v1/health within ${READY_TIMEOUT}s"; return 1; }
	code=$(curl -s -o "$TMP/$slug-register.out" -w '%{http_code}' --max-time 5 -X PUT \
		"$api/v1/services/bench/instances/b-1" \
		-d "{\"address\":\"127.0.0.1\",\"port\":$BACKEND_PORT,\"initial_state\":\"passing\"}" || true)
	if [[ $code != 2?? ]]; then
		TANDEM_WHY="registering the backend failed: HTTP $code: $(head -c 300 "$TMP/$slug-register.out" 2>/dev/null)"
		return 1
	fi
	log "tandem: backend registered as bench/b-1; waiting for its proxy on port $((p + 4))"
	wait_http tandem "$pid" "$proxy_url" -H "Host: $HOST_HEADER" ||
		{ TANDEM_WHY="proxy at $proxy_url (Host: $HOST_HEADER) did not answer 200 within ${READY_TIMEOUT}s"; return 1; }
	check_body tandem "$proxy_url" || { TANDEM_WHY="proxy answered with the wrong body"; return 1; }
}
# add_tandem NAME SLUG PORT FASTPATH
add_tandem() {
	TANDEM_PID="" TANDEM_URL="" TANDEM_WHY=""
	if setup_tandem "$2" "$3" "$4"; then
		add_target "$1" "$2" "$TANDEM_URL" "$TANDEM_PID" ok
	else
		TANDEM_FAILED=1
		log "ERROR: $1: $TANDEM_WHY"
		[[ -f $TMP/$2.log ]] && cp "$TMP/$2.log" "$RESULTS_DIR/$2-agent.log"
		add_target "$1" "$2" "$TANDEM_URL" "$TANDEM_PID" "FAILED: $TANDEM_WHY"
	fi
}
if [[ -n $TANDEM_BIN ]]; then
	case $TANDEM_FASTPATH in
		both)
			add_tandem tandem tandem $((BASE + 10)) on
			add_tandem "tandem (plain path)" tandem-plain $((BASE + 15)) off ;;
		on | off | "") add_tandem tandem tandem $((BASE + 10)) "$TANDEM_FASTPATH" ;;
		*) die "TANDEM_FASTPATH=$TANDEM_FASTPATH: use on, off, both or nothing" ;;
	esac
fi

# ---------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------

{
	echo "date: $(date -Is)"
	echo "host: $(uname -srm), nproc $(nproc), CLK_TCK $CLK_TCK"
	echo "settings: DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS WARMUP=$WARMUP WORKERS=$WORKERS"
	echo "wrk: $(wrk -v 2>&1 | head -n 1 || true)"
	command -v haproxy >/dev/null && echo "haproxy: $(haproxy -v | head -n 1)"
	command -v nginx >/dev/null && echo "nginx: $(nginx -v 2>&1)"
	command -v caddy >/dev/null && echo "caddy: $(caddy version 2>&1 | head -n 1)"
	[[ -n $TANDEM_BIN ]] && echo "tandem: $TANDEM_BIN${TANDEM_FASTPATH:+ TANDEM_FASTPATH=$TANDEM_FASTPATH}"
	[[ $SYSCALLS == 1 ]] && echo "perf: $(perf --version 2>&1)"
	[[ $CR_RATE != 0 ]] && echo "vegeta: $VEGETA $(go version -m "$VEGETA" 2>/dev/null | awk '$1 == "mod" { print $3 }'); CR_RATE=$CR_RATE CR_DURATION=$CR_DURATION CR_ROUNDS=$CR_ROUNDS CR_WARMUP=$CR_WARMUP CR_CONNECTIONS=$CR_CONNECTIONS"
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS_DIR/env.txt"

WRK_TIMEOUT=$((DURATION_S + 30))   # wrk never runs past its duration plus this margin
# run_wrk OUT ARGS...: wrk ARGS > OUT, capped at WRK_TIMEOUT. wrk runs in the
# background and we wait for it, so that Ctrl-C/TERM reach our trap at once
# (bash defers traps while a foreground child runs); cleanup then stops it.
run_wrk() {
	local out=$1; shift
	timeout "$WRK_TIMEOUT" wrk "$@" >"$out" 2>&1 &
	local pid=$!
	STARTED+=("$pid")
	wait "$pid"
}

R_RPS=() R_P50=() R_P99=() R_CPU=() R_BCPU=() R_ERR=() R_SYS=()
first=1
for i in "${!T_NAME[@]}"; do
	R_RPS[i]="" R_P50[i]="" R_P99[i]="" R_CPU[i]="" R_BCPU[i]="" R_ERR[i]="" R_SYS[i]=""
	[[ ${T_STATUS[i]} == ok ]] || { log "skipping ${T_NAME[i]}: ${T_STATUS[i]}"; continue; }
	((first)) || sleep "$PAUSE"
	first=0
	url=${T_URL[i]} pid=${T_PID[i]} out="$RESULTS_DIR/${T_SLUG[i]}.txt"
	wrk_args=(-t"$THREADS" -c"$CONNECTIONS" --latency -H "Host: $HOST_HEADER")
	if [[ $WARMUP != 0 ]]; then
		run_wrk "$RESULTS_DIR/${T_SLUG[i]}.warmup.txt" "${wrk_args[@]}" -d"$WARMUP" "$url" || true
	fi
	counting=0
	[[ $SYSCALLS == 1 && $pid != "$BACKEND_PID" ]] && counting=1
	((counting)) && { sys_start "$pid"; sys_on; threads0=$(count_threads "$pid"); }
	log "running wrk against ${T_NAME[i]} ($url) for $DURATION"
	cpu0=$(cpu_ticks "$pid") bcpu0=$(cpu_ticks "$BACKEND_PID")
	rc=0
	run_wrk "$out" "${wrk_args[@]}" -d"$DURATION" "$url" || rc=$?
	((counting)) && sys_off
	cpu1=$(cpu_ticks "$pid") bcpu1=$(cpu_ticks "$BACKEND_PID")
	if ((counting)); then
		sys_stop
		threads1=$(count_threads "$pid")
		((threads1 <= threads0)) || log "NOTE: ${T_NAME[i]} went from $threads0 to $threads1 threads during the run (perf counts new threads too)"
	fi
	((rc == 0)) || log "WARNING: wrk exited with status $rc against ${T_NAME[i]} (see $out)"
	read -r rps p50 p99 reqs errs < <(parse_wrk "$out")
	R_RPS[i]=$rps R_P50[i]=$p50 R_P99[i]=$p99 R_ERR[i]=$errs
	R_BCPU[i]=$(us_per_req $((bcpu1 - bcpu0)) "$reqs")
	if [[ $pid == "$BACKEND_PID" ]]; then
		R_CPU[i]="— (no proxy)" R_SYS[i]="—"
	else
		R_CPU[i]=$(us_per_req $((cpu1 - cpu0)) "$reqs")
		R_SYS[i]="n/a"
		((counting)) && R_SYS[i]=$(per_req "$SYS_CALLS" "$reqs")
	fi
	((errs == 0)) || log "WARNING: ${T_NAME[i]}: $errs socket errors / non-2xx responses (see $out)"
	log "${T_NAME[i]}: $rps req/s, p50 $(fmt_ms "$p50"), p99 $(fmt_ms "$p99"), proxy CPU ${R_CPU[i]} µs/req, ${R_SYS[i]} syscalls/req"
done

# Constant rate (open loop): vegeta sends CR_RATE requests per second on
# at most CR_CONNECTIONS keep-alive connections whatever the latency, so a
# slow answer shows in the tail instead of slowing the load down (wrk's
# closed loop sends less when answers come slowly, and at saturation its
# latency is mostly queueing). The measured time is cut into CR_ROUNDS
# slices and the targets take turns, a slice each per round (the first
# target of a round moves on by one every round), so that a burst of
# outside load on a shared machine lands on every target alike instead of
# on whichever ran at the time. Each target's slices are reported together.
CR_P50=() CR_P99=() CR_MAX=() CR_RATE_GOT=() CR_OK=() CR_CPU=() CR_SYS=()
# run_vegeta BIN URL DURATION: vegeta's results (binary) to BIN.
run_vegeta() {
	local bin=$1 url=$2 dur=$3
	printf 'GET %s\n' "$url" | timeout $(($(secs "$dur") + 30)) "$VEGETA" attack -rate="$CR_RATE" -duration="$dur" \
		-header "Host: $HOST_HEADER" -keepalive=true -http2=false \
		-connections="$CR_CONNECTIONS" -max-connections="$CR_CONNECTIONS" \
		-workers="$CR_CONNECTIONS" -max-workers="$CR_CONNECTIONS" -timeout=10s >"$bin" &
	local pid=$!
	STARTED+=("$pid")
	wait "$pid"
}
if [[ $CR_RATE != 0 ]]; then
	SLICE_S=$((CR_DURATION_S / CR_ROUNDS))
	((SLICE_S >= 1)) || die "CR_DURATION=$CR_DURATION is too short for CR_ROUNDS=$CR_ROUNDS slices of at least 1 s"
	CR_TICKS=() CR_CALLS=() CR_BINS=() CR_FAILED=()
	ok_targets=()
	for i in "${!T_NAME[@]}"; do
		CR_P50[i]="" CR_P99[i]="" CR_MAX[i]="" CR_RATE_GOT[i]="" CR_OK[i]="" CR_CPU[i]="" CR_SYS[i]=""
		CR_TICKS[i]=0 CR_CALLS[i]=0 CR_BINS[i]="" CR_FAILED[i]=0
		[[ ${T_STATUS[i]} == ok ]] && ok_targets+=("$i")
	done
	log "constant rate: $CR_RATE req/s, $CR_ROUNDS rounds of ${SLICE_S}s per target ($CR_CONNECTIONS connections)"
	for ((round = 0; round < CR_ROUNDS; round++)); do
		n=${#ok_targets[@]}
		for ((k = 0; k < n; k++)); do
			i=${ok_targets[(k + round) % n]}
			url=${T_URL[i]} pid=${T_PID[i]}
			sleep "$PAUSE"
			if ((round == 0)) && [[ $CR_WARMUP != 0 ]]; then
				run_vegeta "$TMP/${T_SLUG[i]}.warmup.bin" "$url" "$CR_WARMUP" || true
			fi
			counting=0
			[[ $SYSCALLS == 1 && $pid != "$BACKEND_PID" ]] && counting=1
			((counting)) && { sys_start "$pid"; sys_on; }
			cpu0=$(cpu_ticks "$pid")
			bin="$TMP/${T_SLUG[i]}.r$round.bin"
			rc=0
			run_vegeta "$bin" "$url" "${SLICE_S}s" || rc=$?
			((counting)) && sys_off
			cpu1=$(cpu_ticks "$pid")
			if ((counting)); then
				sys_stop
				if [[ -n $SYS_CALLS && ${CR_CALLS[i]} != "" ]]; then
					CR_CALLS[i]=$((CR_CALLS[i] + SYS_CALLS))
				else
					CR_CALLS[i]=""
				fi
			fi
			CR_TICKS[i]=$((CR_TICKS[i] + cpu1 - cpu0))
			if ((rc != 0)) || [[ ! -s $bin ]]; then
				log "WARNING: vegeta failed against ${T_NAME[i]} in round $((round + 1)) (status $rc)"
				CR_FAILED[i]=1
			fi
			CR_BINS[i]+=" $bin"
			log "round $((round + 1))/$CR_ROUNDS: ${T_NAME[i]} done"
		done
	done
	for i in "${ok_targets[@]}"; do
		out="$RESULTS_DIR/${T_SLUG[i]}.rate.json"
		((CR_FAILED[i] == 0)) || continue
		# shellcheck disable=SC2086
		"$VEGETA" report -type=json ${CR_BINS[i]} >"$out" || { log "WARNING: vegeta report failed for ${T_NAME[i]}"; continue; }
		# shellcheck disable=SC2086
		"$VEGETA" report -type=text ${CR_BINS[i]} >"$RESULTS_DIR/${T_SLUG[i]}.rate.txt" || true
		read -r p50 p99 pmax rate reqs okr < <(jq -r '[.latencies["50th"]/1e6, .latencies["99th"]/1e6,
			.latencies.max/1e6, .rate, .requests, .success] | @tsv' "$out")
		# vegeta's own rate would span the other targets' turns too
		rate=$(awk -v n="$reqs" -v s=$((CR_ROUNDS * SLICE_S)) 'BEGIN { print n / s }')
		CR_P50[i]=$p50 CR_P99[i]=$p99 CR_MAX[i]=$pmax CR_RATE_GOT[i]=$rate CR_OK[i]=$okr
		if [[ ${T_PID[i]} == "$BACKEND_PID" ]]; then
			CR_CPU[i]="—" CR_SYS[i]="—"
		else
			CR_CPU[i]=$(us_per_req "${CR_TICKS[i]}" "$reqs")
			CR_SYS[i]="n/a"
			[[ $SYSCALLS == 1 && -n ${CR_CALLS[i]} ]] && CR_SYS[i]=$(per_req "${CR_CALLS[i]}" "$reqs")
		fi
		awk -v s="$okr" 'BEGIN { exit !(s < 1) }' &&
			log "WARNING: ${T_NAME[i]}: only $(awk -v s="$okr" 'BEGIN { printf "%.4f", s * 100 }')% of requests succeeded (see $out)"
		log "${T_NAME[i]} at $CR_RATE req/s: p50 $(fmt_ms "$p50"), p99 $(fmt_ms "$p99"), max $(fmt_ms "$pmax")"
	done
fi

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

idx_of() { local i; for i in "${!T_SLUG[@]}"; do [[ ${T_SLUG[i]} == "$1" ]] && { echo "$i"; return; }; done; echo -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

GATE_LINE="" GATE_FAILED=0
t=$(idx_of tandem)
if [[ $SYSCALLS == 1 ]] && ((t >= 0)); then
	if [[ ${T_STATUS[t]} != ok ]]; then
		GATE_LINE="gate: tandem system calls per request ≤ $SYSCALL_GATE: FAIL (tandem did not run)" GATE_FAILED=1
	elif awk -v v="${R_SYS[t]}" -v g="$SYSCALL_GATE" 'BEGIN { exit !(v != "n/a" && v + 0 <= g) }'; then
		GATE_LINE="gate: tandem system calls per request (wrk run) ${R_SYS[t]} ≤ $SYSCALL_GATE: PASS"
	else
		GATE_LINE="gate: tandem system calls per request (wrk run) ${R_SYS[t]} ≤ $SYSCALL_GATE: FAIL" GATE_FAILED=1
	fi
fi

# added A B: A - B in ms, or n/a.
added() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "n/a" || b == "n/a") print "n/a"; else printf "%+.3f ms", a - b }'; }

{
	echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -H 'Host: $HOST_HEADER'; proxies with $WORKERS workers, FORWARD_HEADERS=$FORWARD_HEADERS; $(nproc) CPUs shared by wrk, proxy and backend"
	echo
	echo "| target | req/s | p50 | p99 | CPU µs/req | syscalls/req | backend CPU µs/req | errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for i in "${!T_NAME[@]}"; do
		if [[ ${T_STATUS[i]} == ok ]]; then
			printf '| %s | %.0f | %s | %s | %s | %s | %s | %s |\n' "${T_NAME[i]}" "${R_RPS[i]}" \
				"$(fmt_ms "${R_P50[i]}")" "$(fmt_ms "${R_P99[i]}")" "${R_CPU[i]}" "${R_SYS[i]:-n/a}" "${R_BCPU[i]}" "${R_ERR[i]}"
		else
			printf '| %s | %s | | | | | | |\n' "${T_NAME[i]}" "${T_STATUS[i]}"
		fi
	done
	for t in $(idx_of tandem) $(idx_of tandem-plain); do
		((t >= 0)) && [[ ${T_STATUS[t]} == ok ]] || continue
		echo
		for other in haproxy nginx caddy; do
			o=$(idx_of "$other")
			if ((o < 0)) || [[ ${T_STATUS[o]} != ok ]]; then continue; fi
			echo "- ${T_NAME[t]}/${T_NAME[o]}: throughput $(ratio "${R_RPS[t]}" "${R_RPS[o]}"), CPU per request $(ratio "${R_CPU[t]}" "${R_CPU[o]}")"
		done
	done
	if [[ $CR_RATE != 0 ]]; then
		d=$(idx_of direct)
		echo
		echo "constant rate: vegeta attack -rate=$CR_RATE, $CR_CONNECTIONS keep-alive connections and workers, $CR_DURATION per target in $CR_ROUNDS turns of ${SLICE_S}s ($([[ $CR_WARMUP == 0 ]] && echo "no warm-up" || echo "after $CR_WARMUP at the same rate"))"
		echo
		echo "| target | req/s sent | p50 | p99 | max | p50 added | p99 added | CPU µs/req | syscalls/req | success |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		for i in "${!T_NAME[@]}"; do
			[[ ${T_STATUS[i]} == ok ]] || continue
			if [[ -z ${CR_P50[i]} ]]; then
				printf '| %s | vegeta failed | | | | | | | | |\n' "${T_NAME[i]}"
				continue
			fi
			pa="—" qa="—"
			((i != d)) && pa=$(added "${CR_P50[i]}" "${CR_P50[d]:-}") qa=$(added "${CR_P99[i]}" "${CR_P99[d]:-}")
			printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %.2f%% |\n' "${T_NAME[i]}" "${CR_RATE_GOT[i]}" \
				"$(fmt_ms "${CR_P50[i]}")" "$(fmt_ms "${CR_P99[i]}")" "$(fmt_ms "${CR_MAX[i]}")" "$pa" "$qa" \
				"${CR_CPU[i]}" "${CR_SYS[i]:-n/a}" "$(awk -v s="${CR_OK[i]}" 'BEGIN { print s * 100 }')"
		done
		for t in $(idx_of tandem) $(idx_of tandem-plain); do
			((t >= 0)) && [[ -n ${CR_P99[t]:-} ]] || continue
			echo
			for other in haproxy nginx caddy; do
				o=$(idx_of "$other")
				if ((o < 0)) || [[ -z ${CR_P99[o]:-} ]]; then continue; fi
				echo "- ${T_NAME[t]}/${T_NAME[o]} at $CR_RATE req/s: p99 $(ratio "${CR_P99[t]}" "${CR_P99[o]}"), p50 added $(ratio "$(awk -v a="${CR_P50[t]}" -v b="${CR_P50[d]}" 'BEGIN { print a - b }')" "$(awk -v a="${CR_P50[o]}" -v b="${CR_P50[d]}" 'BEGIN { print a - b }')"), CPU per request $(ratio "${CR_CPU[t]}" "${CR_CPU[o]}")"
			done
		done
	fi
	t=$(idx_of tandem) u=$(idx_of tandem-plain)
	if ((t >= 0 && u >= 0)) && [[ ${T_STATUS[t]} == ok && ${T_STATUS[u]} == ok ]]; then
		echo
		echo "- fast path/plain path (wrk run): syscalls per request ${R_SYS[t]} vs ${R_SYS[u]}, throughput $(ratio "${R_RPS[t]}" "${R_RPS[u]}"), CPU per request $(ratio "${R_CPU[t]}" "${R_CPU[u]}")"
		if [[ $CR_RATE != 0 && -n ${CR_P99[t]:-} && -n ${CR_P99[u]:-} ]]; then
			echo "- fast path/plain path at $CR_RATE req/s: p50 $(ratio "${CR_P50[t]}" "${CR_P50[u]}"), p99 $(ratio "${CR_P99[t]}" "${CR_P99[u]}"), CPU per request $(ratio "${CR_CPU[t]}" "${CR_CPU[u]}"), syscalls per request ${CR_SYS[t]} vs ${CR_SYS[u]}"
		fi
	fi
	if [[ -n $GATE_LINE ]]; then
		echo
		echo "$GATE_LINE"
	fi
} | tee "$RESULTS_DIR/summary.md"

echo
echo "results (raw wrk outputs, rendered configs, summary.md): $RESULTS_DIR"
if ((TANDEM_FAILED)); then
	agent_log=""
	for f in "$RESULTS_DIR"/tandem*-agent.log; do
		[[ -f $f ]] && agent_log+=" (agent log: $f)"
	done
	die "tandem benchmark failed: $TANDEM_WHY$agent_log"
fi
if ((GATE_FAILED)) && [[ $GATE == 1 ]]; then
	log "$GATE_LINE"
	exit 3
fi
