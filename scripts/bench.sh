#!/usr/bin/env bash
# herd-front against NGINX, as reverse proxies in front of the same backend.
#
# What it measures: one backend worker (examples/benchapp, run by herd-node
# as app "bench", one worker, no concurrency limit) on 127.0.0.1:P, and wrk
# sending GET /bytes/100 and GET /bytes/16384 to it
#   direct  straight to the worker (the ceiling: no proxy at all),
#   nginx   through NGINX (1 worker process, upstream keep-alive),
#   herd    through herd-front (routing by Host: bench.local).
# And static files, served by the proxy itself (no backend involved):
# GET /static/s100.txt (100 bytes) and /static/s1m.bin (1 MiB of random
# bytes, so nothing compresses) from the release's static/ directory,
#   nginx   `location /static/ { alias ...; sendfile on; tcp_nopush on;
#           open_file_cache ...; }` on the directory the release is packed
#           from,
#   herd    herdctl deploy --static /static/=static/: herd-front serves its
#           own unpacked copy of the release (under its data dir, on the
#           same disk).
# wrk sends no Accept-Encoding, so neither compresses anything. The 1 MiB
# file is fetched over BIG_CONNS connections, not CONNS. Over loopback, a
# 1 MiB response's TCP transmit work runs on whichever core pushes the
# packets: nginx's tcp_nopush (TCP_CORK) keeps most of it on core 0 (its
# cpu_us/req goes up, and core 1, wrk's, is spared), herd-front's mostly
# lands on core 1. So for static1MiB read req/s and cpu_us/req together.
# The proxies run on core 0; wrk, herd-node and the worker share core 1. So
# for a proxy run, core 0 is the proxy's alone and its CPU time is measured
# from /proc (utime+stime of all its processes, before and after the run).
# Every run is preceded by a 2 s warm-up that is not measured.
#
# How to read the table (printed at the end and written to $OUT):
#   req/s, p50, p99     wrk's throughput and latency percentiles
#   cpu_us/req          the proxy's CPU time per completed request, in µs:
#                       the cost of proxying one request
#   cpu_pct             how busy the proxy kept its core (100 = all of it);
#                       below 100, req/s was limited by core 1 (wrk and the
#                       backend), not by the proxy, so rps_ratio understates
#                       a difference that cpu_ratio shows
#   rss_kib             the proxy's resident memory after the run
#   cpu_ratio_vs_nginx  herd's cpu_us/req over nginx's: 2.00x means herd
#                       spends twice the CPU per request (lower is better)
#   rps_ratio_vs_nginx  herd's req/s over nginx's (higher is better)
# Absolute numbers depend on the machine and its neighbours (shared machines
# are noisy); compare the ratios, and compare runs made on the same machine.
#
# Needs 2 cores, Go, and nginx + wrk (installed with apt-get if missing;
# the system nginx service is never started: nginx runs from its own config
# in a temporary directory). Everything it starts is stopped on exit,
# Ctrl-C included. Nothing leaves loopback.
#
# Knobs (environment):
#   DURATION  length of each measured run, wrk's -d   (default 10s)
#   CONNS     connections kept open by wrk, wrk's -c  (default 32)
#   BIG_CONNS wrk's -c for the 1 MiB static file      (default 4): with
#             more, the run measures loopback bandwidth and socket buffers
#             (and wrk reading 1 MiB per request on core 1), not the proxy
#   OUT       where the table is written              (default /tmp/herd-bench.txt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
BIG_CONNS=${BIG_CONNS:-4}
OUT=${OUT:-/tmp/herd-bench.txt}
WARMUP=2s
HOSTNAME_=bench.local
SIZES=(100 16384)

die() {
	echo "bench: $*" >&2
	exit 1
}
log() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------- tools

[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "CONNS=$CONNS: want a number of connections"
[[ $BIG_CONNS =~ ^[1-9][0-9]*$ ]] || die "BIG_CONNS=$BIG_CONNS: want a number of connections"
[[ $DURATION =~ ^[0-9]+[smh]?$ ]] || die "DURATION=$DURATION: want e.g. 10s, 1m"
[ "$(nproc)" -ge 2 ] || die "needs at least 2 cores (proxy on core 0, load and backend on core 1)"
command -v go >/dev/null || die "go is not installed"
command -v taskset >/dev/null || die "taskset (util-linux) is not installed"

# has_candidate PKG: apt knows a version of PKG to install.
has_candidate() {
	local policy
	policy=$(apt-cache policy "$1" 2>/dev/null) || return 1
	[[ $policy == *"Candidate: "[0-9]* ]]
}

install_tools() {
	local pkgs=() made_policy=false
	command -v wrk >/dev/null || pkgs+=(wrk)
	command -v curl >/dev/null || pkgs+=(curl)
	if ! command -v nginx >/dev/null && ! [ -x /usr/sbin/nginx ]; then
		if ! has_candidate nginx-light && ! has_candidate nginx; then
			apt-get update -qq
		fi
		if has_candidate nginx-light; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
	fi
	[ ${#pkgs[@]} -eq 0 ] && return
	[ "$(id -u)" = 0 ] || die "missing ${pkgs[*]}; run as root or install them: apt-get install -y ${pkgs[*]}"
	log "installing ${pkgs[*]}"
	# Keep the packages' maintainer scripts from starting the system nginx
	# service: invoke-rc.d asks policy-rc.d, and 101 means "not allowed".
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made_policy=true
	fi
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null ||
			{ $made_policy && rm -f /usr/sbin/policy-rc.d; die "apt-get install ${pkgs[*]} failed"; }
	fi
	$made_policy && rm -f /usr/sbin/policy-rc.d
	return 0
}
install_tools
nginx=$(command -v nginx || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- cleanup

work=$(mktemp -d "${TMPDIR:-/tmp}/herd-bench.XXXXXX")
chmod 755 "$work" # nginx's worker may run as another user
pids=()           # every long-running process started, stopped on exit
wrk_pid=""        # the wrk running now, if any

# Processes whose working directory or binary is inside $work: every process
# this script started runs there, the worker included.
leftovers() {
	local p out=""
	for p in /proc/[0-9]*; do
		case "$(readlink "$p/cwd" 2>/dev/null)|$(readlink "$p/exe" 2>/dev/null)" in
		"$work"/* | "$work|"* | *"|$work"/*) out="$out ${p#/proc/}" ;;
		esac
	done
	echo "$out"
}

cleanup() {
	local status=$? pid alive left
	trap - EXIT INT TERM
	[ -n "$wrk_pid" ] && { kill -TERM "$wrk_pid" 2>/dev/null || true; }
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 1 100); do
		alive=0
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	# Whatever outlived its parent (an nginx worker, the app worker).
	left=$(leftovers)
	if [ -n "$left" ]; then
		for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
		sleep 0.2
	fi
	if [ $status = 130 ] || [ $status = 143 ]; then
		echo "bench: interrupted; stopped everything it started" >&2
	elif [ $status != 0 ]; then
		echo "bench: failed; the logs:" >&2
		for f in "$work"/*.log "$work"/nginx/error.log; do
			[ -s "$f" ] || continue
			echo "--- ${f#"$work"/} (last lines)" >&2
			tail -n 20 "$f" >&2
		done
	fi
	rm -rf "$work"
	exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers

addr() { # addr DATADIR KEY: the address a herd process listens on
	for _ in $(seq 1 200); do
		if [ -f "$1/addrs.json" ]; then
			sed -n "s/.*\"$2\": \"\([^\"]*\)\".*/\1/p" "$1/addrs.json"
			return
		fi
		sleep 0.05
	done
	die "a herd process did not start (no $1/addrs.json)"
}

free_port() { # a loopback port nothing listens on, from 20000-29999
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 10000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

cpu_ticks() { # cpu_ticks PID...: utime+stime of the processes, in clock ticks
	local pid sum=0 stat rest
	for pid in "$@"; do
		stat=$(cat "/proc/$pid/stat") || die "process $pid is gone"
		rest=${stat##*) } # fields from 3 on (the name may hold spaces)
		# shellcheck disable=SC2086 # split into fields on purpose
		set -- $rest
		sum=$((sum + ${12} + ${13})) # fields 14 (utime) and 15 (stime)
	done
	echo $sum
}

rss_kib() { # rss_kib PID...: the processes' VmRSS summed, in KiB
	local pid sum=0 kb
	for pid in "$@"; do
		kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
		sum=$((sum + kb))
	done
	echo $sum
}

probe() { # probe URL: "HTTPCODE BYTES" of one GET with Host: bench.local
	curl -s --max-time 5 -o /dev/null -H "Host: $HOSTNAME_" -w '%{http_code} %{size_download}' "$1" || true
}

to_ms() { # to_ms 152.00us|1.20ms|1.01s -> milliseconds, 3 decimals
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}

# wrk_run OUTFILE CONNS URL [wrk flags]: wrk on core 1; run in the
# background and waited for, so that Ctrl-C reaches the traps at once.
wrk_run() {
	local out=$1 conns=$2 url=$3
	shift 3
	taskset -c 1 wrk -t1 -c"$conns" -H "Host: $HOSTNAME_" "$@" "$url" >"$out" 2>&1 &
	wrk_pid=$!
	wait "$wrk_pid" || die "wrk against $url failed: $(cat "$out")"
	wrk_pid=""
}

# ---------------------------------------------------------------- build

bin=$work/bin
mkdir -p "$bin" "$work/app/static"
log "building herd and benchapp"
go build -o "$bin/herd-front" ./cmd/front
go build -o "$bin/herd-node" ./cmd/node
go build -o "$bin/herdctl" ./cmd/ctl
CGO_ENABLED=0 go build -o "$work/app/benchapp" ./examples/benchapp
herdctl=$bin/herdctl

# The static files, in the release (herd serves its own unpacked copy of
# it; nginx serves this directory).
STATIC_FILES=(s100.txt s1m.bin)
declare -A static_size=([s100.txt]=100 [s1m.bin]=1048576)
declare -A static_label=([s100.txt]=static100B [s1m.bin]=static1MiB)
declare -A static_conns=([s100.txt]=$CONNS [s1m.bin]=$BIG_CONNS)
printf '%099d\n' 0 >"$work/app/static/s100.txt"
head -c 1048576 /dev/urandom >"$work/app/static/s1m.bin"
chmod 644 "$work/app/static/"*
for f in "${STATIC_FILES[@]}"; do
	[ "$(stat -c %s "$work/app/static/$f")" = "${static_size[$f]}" ] || die "cannot write $work/app/static/$f"
done

# ---------------------------------------------------------------- herd

P=$(free_port) # the worker's port: herd-node is given this one port only

# Started from $work so that leftovers() finds them; taskset execs the
# program, so $! is the program's pid.
(cd "$work" && exec taskset -c 0 "$bin/herd-front" --data-dir "$work/front" --name front-1 \
	--http 127.0.0.1:0 --grpc 127.0.0.1:0 --admin 127.0.0.1:0 --gossip 127.0.0.1:0 --raft 127.0.0.1:0 \
	--log-level warn) >"$work/front.log" 2>&1 &
front_pid=$!
pids+=("$front_pid")
front_http=$(addr "$work/front" http)
front_grpc=$(addr "$work/front" grpc)
front_gossip=$(addr "$work/front" gossip)

(cd "$work" && exec taskset -c 1 "$bin/herd-node" --data-dir "$work/node" --name node-1 \
	--advertise 127.0.0.1 --gossip 127.0.0.1:0 --grpc 127.0.0.1:0 --admin 127.0.0.1:0 --join "$front_gossip" --cluster-key-file "$work/front/cluster.key" \
	--port-range "$P-$P" --log-level warn) >"$work/node.log" 2>&1 &
pids+=($!)
addr "$work/node" grpc >/dev/null

export HERD_CONFIG=$work/front/admin.herdctl HERD_ADDR=$front_grpc
for i in $(seq 1 100); do
	[ "$("$herdctl" nodes 2>/dev/null | grep -c ' alive')" = 2 ] && break
	[ "$i" = 100 ] && die "herd-node did not join the front"
	sleep 0.1
done

log "deploying benchapp on 127.0.0.1:$P"
concurrency=0
deploy() {
	"$herdctl" deploy bench "$work/app" --cmd 'exec ./benchapp' --workers 1 \
		--concurrency "$concurrency" --host "$HOSTNAME_" --health /healthz \
		--static /static/=static/ >>"$work/deploy.log" 2>&1
}
if ! deploy; then
	concurrency=1000
	log "deploy with --concurrency 0 failed; trying --concurrency $concurrency"
	deploy || die "herdctl deploy failed: $(cat "$work/deploy.log")"
fi

direct=http://127.0.0.1:$P
herd=http://$front_http
for i in $(seq 1 100); do
	[ "$(probe "$herd/bytes/100")" = "200 100" ] && break
	[ "$i" = 100 ] && die "herd-front does not route bench.local: $(probe "$herd/bytes/100")"
	sleep 0.1
done

# The app worker: the benchapp process (a child of herd-node, on core 1).
app_pid=""
for p in /proc/[0-9]*; do
	case "$(readlink "$p/exe" 2>/dev/null)" in "$work/node/"*/benchapp) app_pid=${p#/proc/} ;; esac
done
[ -n "$app_pid" ] || die "cannot find the benchapp worker process"

# ---------------------------------------------------------------- nginx

N=$(free_port)
ngx=$work/nginx
mkdir -p "$ngx/tmp"
# Content types as a packaged nginx has them (herd-front has its own table).
mime_types="    default_type application/octet-stream;"
if [ -f /etc/nginx/mime.types ]; then
	mime_types="    include /etc/nginx/mime.types;
$mime_types"
fi
cat >"$ngx/nginx.conf" <<CONF
# Written by scripts/bench.sh; the fair peer of herd-front.
user $(id -un) $(id -gn);
worker_processes 1;
daemon off;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;

events {
    worker_connections 4096;
}

http {
$mime_types
    access_log off;
    keepalive_requests 100000;
    keepalive_timeout 65s;
    client_body_temp_path $ngx/tmp/body;
    proxy_temp_path $ngx/tmp/proxy;
    fastcgi_temp_path $ngx/tmp/fastcgi;
    uwsgi_temp_path $ngx/tmp/uwsgi;
    scgi_temp_path $ngx/tmp/scgi;

    upstream bench {
        server 127.0.0.1:$P;
        keepalive 64;
        keepalive_requests 100000;
        # below benchapp's 5 s idle timeout, as herd's 1.5 s is
        keepalive_timeout 4s;
    }

    server {
        listen 127.0.0.1:$N;
        # a typical static location (herd-front: herdctl deploy --static)
        location /static/ {
            alias $work/app/static/;
            sendfile on;
            tcp_nopush on;
            open_file_cache max=1000 inactive=20s;
        }
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # what herd-front sends too: Host kept, X-Forwarded-* set
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
CONF
"$nginx" -t -q -c "$ngx/nginx.conf" -p "$ngx" -e "$ngx/error.log" ||
	die "nginx rejects its config: $(cat "$ngx/error.log")"
# taskset before nginx starts, so the worker it forks inherits core 0.
(cd "$work" && exec taskset -c 0 "$nginx" -c "$ngx/nginx.conf" -p "$ngx" -e "$ngx/error.log") \
	>"$work/nginx.log" 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")
nginx_url=http://127.0.0.1:$N
for i in $(seq 1 100); do
	[ "$(probe "$nginx_url/bytes/100")" = "200 100" ] && break
	[ "$i" = 100 ] && die "nginx does not answer: $(probe "$nginx_url/bytes/100")"
	sleep 0.1
done
nginx_worker=$(pgrep -P "$nginx_pid" | head -n 1) || die "nginx has no worker process"
nginx_pids=("$nginx_pid" "$nginx_worker")

# ---------------------------------------------------------------- checks

for size in "${SIZES[@]}"; do
	for url in "$direct" "$nginx_url" "$herd"; do
		got=$(probe "$url/bytes/$size")
		[ "$got" = "200 $size" ] || die "GET $url/bytes/$size: got '$got', want '200 $size'"
	done
done
for f in "${STATIC_FILES[@]}"; do
	for url in "$nginx_url" "$herd"; do
		got=$(probe "$url/static/$f")
		[ "$got" = "200 ${static_size[$f]}" ] ||
			die "GET $url/static/$f: got '$got', want '200 ${static_size[$f]}'"
	done
done
affinity() { taskset -cp "$1" | sed 's/.*: //'; }
log "cores: herd-front $(affinity "$front_pid"), nginx master $(affinity "$nginx_pid")" \
	"worker $(affinity "$nginx_worker"), benchapp $(affinity "$app_pid"), wrk 1"
if [ "$(affinity "$nginx_worker")" != 0 ] || [ "$(affinity "$front_pid")" != 0 ] ||
	[ "$(affinity "$app_pid")" != 1 ]; then
	die "processes are not pinned as intended"
fi

# ---------------------------------------------------------------- runs

# How busy the machine is with everything else (ours is idle now): other
# load on these 2 cores skews every number, so say so.
cpu_busy_pct() { # % of all CPU time not idle over 1 s
	local a b
	a=$(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
	sleep 1
	b=$(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
		t = y[1] - x[1]; i = y[2] - x[2]; printf "%.0f", (t > 0 ? (t - i) * 100 / t : 0) }'
}
busy=$(cpu_busy_pct)
if [ "$busy" -gt 10 ]; then
	log "WARNING: the machine is ${busy}% busy with other work before the runs; numbers will be noisy"
fi

hz=$(getconf CLK_TCK)
declare -A rps p50 p99 cpu pct rss

# measure KEY CONNS URL [PID...]: one measured wrk run with CONNS
# connections; with PIDs, their CPU time during the run and their RSS
# after it.
measure() {
	local key=$1 conns=$2 url=$3 before after reqs secs out
	shift 3
	log "$key: $url ($DURATION, $conns connections)"
	out=$work/$key.wrk
	wrk_run "$work/$key.warm" "$conns" "$url" -d"$WARMUP"
	[ $# -gt 0 ] && before=$(cpu_ticks "$@")
	wrk_run "$out" "$conns" "$url" -d"$DURATION" --latency
	[ $# -gt 0 ] && after=$(cpu_ticks "$@")
	if grep -Eq 'Non-2xx|Socket errors' "$out"; then
		cat "$out" >&2
		die "$key: wrk saw non-2xx answers or socket errors (above)"
	fi
	reqs=$(sed -n 's/^ *\([0-9][0-9]*\) requests in .*/\1/p' "$out")
	[ "${reqs:-0}" -gt 0 ] || die "$key: no requests completed: $(cat "$out")"
	rps[$key]=$(awk '/^Requests\/sec:/ {print $2}' "$out")
	p50[$key]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
	p99[$key]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
	if [ $# -gt 0 ]; then
		# "N requests in 10.00s," (or 1.00m, 1.00h for long runs)
		secs=$(awk '$2 == "requests" && $3 == "in" { v = $4; sub(/,$/, "", v); n = v + 0
			if (v ~ /ms$/) n /= 1000; else if (v ~ /m$/) n *= 60; else if (v ~ /h$/) n *= 3600
			print n }' "$out")
		cpu[$key]=$(awk -v d=$((after - before)) -v hz="$hz" -v n="$reqs" \
			'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
		pct[$key]=$(awk -v d=$((after - before)) -v hz="$hz" -v t="${secs:-0}" \
			'BEGIN { if (t > 0) printf "%.0f", d / hz / t * 100; else print "-" }')
		rss[$key]=$(rss_kib "$@")
	else
		cpu[$key]=-
		pct[$key]=-
		rss[$key]=-
	fi
}

for size in "${SIZES[@]}"; do
	measure "$size-direct" "$CONNS" "$direct/bytes/$size"
	measure "$size-nginx" "$CONNS" "$nginx_url/bytes/$size" "${nginx_pids[@]}"
	measure "$size-herd" "$CONNS" "$herd/bytes/$size" "$front_pid"
done
# Static files: the proxies alone (no backend, so no direct row).
for f in "${STATIC_FILES[@]}"; do
	l=${static_label[$f]}
	measure "$l-nginx" "${static_conns[$f]}" "$nginx_url/static/$f" "${nginx_pids[@]}"
	measure "$l-herd" "${static_conns[$f]}" "$herd/static/$f" "$front_pid"
done

# ---------------------------------------------------------------- table

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
label() { case $1 in 100) echo 100B ;; 16384) echo 16KiB ;; *) echo "${1}B" ;; esac; }
row() { # row LABEL TARGET KEY NGINXKEY
	local cr rr
	case $2 in
	direct) cr=- rr=- ;;
	nginx) cr=1.00 rr=1.00 ;;
	herd)
		cr=$(ratio "${cpu[$3]}" "${cpu[$4]}")
		rr=$(ratio "${rps[$3]}" "${rps[$4]}")
		;;
	esac
	printf '%-10s %-7s %10s %9s %9s %11s %8s %8s %19s %19s\n' "$1" "$2" \
		"${rps[$3]}" "${p50[$3]}" "${p99[$3]}" "${cpu[$3]}" "${pct[$3]}" "${rss[$3]}" "$cr" "$rr"
}
# target LABEL MIN: herd against the issue's target for a static row.
target() {
	local l=$1 min=$2 rr pc
	rr=$(ratio "${rps[$l-herd]}" "${rps[$l-nginx]}")
	pc=$(ratio "${cpu[$l-nginx]}" "${cpu[$l-herd]}")
	printf '  %-10s >= %.2fx   req/s %-6s %-6s   req/s per core %-6s %s\n' "$l" "$min" \
		"$rr" "$(awk -v r="${rr%x}" -v m="$min" 'BEGIN { print (r + 0 >= m ? "met" : "MISSED") }')" \
		"$pc" "$(awk -v r="${pc%x}" -v m="$min" 'BEGIN { print (r + 0 >= m ? "met" : "MISSED") }')"
}

{
	echo "herd bench $(date -u +%Y-%m-%dT%H:%M:%SZ), herd $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')," \
		"$("$nginx" -v 2>&1 | sed 's/.*: //'), $(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2}'), $(go env GOVERSION)"
	echo "wrk -t1 -c$CONNS -d$DURATION (static1MiB: -c$BIG_CONNS) on core 1 with herd-node and the worker;" \
		"proxies on core 0; herd app concurrency $concurrency; machine ${busy}% busy with other work before the runs"
	echo
	printf '%-10s %-7s %10s %9s %9s %11s %8s %8s %19s %19s\n' size target req/s p50_ms p99_ms \
		cpu_us/req cpu_pct rss_kib cpu_ratio_vs_nginx rps_ratio_vs_nginx
	for size in "${SIZES[@]}"; do
		for t in direct nginx herd; do
			row "$(label "$size")" "$t" "$size-$t" "$size-nginx"
		done
	done
	for f in "${STATIC_FILES[@]}"; do
		l=${static_label[$f]}
		for t in nginx herd; do
			row "$l" "$t" "$l-$t" "$l-nginx"
		done
	done
	echo
	echo "static-file targets, herd over nginx (req/s per core: nginx's cpu_us/req over herd's):"
	target static100B 1.0
	target static1MiB 0.9
} >"$work/table.txt"
echo
cat "$work/table.txt"
cp "$work/table.txt" "$OUT"
echo
echo "(written to $OUT)"
