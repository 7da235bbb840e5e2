#!/usr/bin/env bash
# A local herd cluster on loopback: one herd-front and three herd-nodes,
# with examples/hello deployed (2 workers per node). Runs until Ctrl-C, then
# stops everything it started.
#
#   scripts/demo.sh           run the demo (make demo)
#   scripts/demo.sh --smoke   start, check that requests reach all three
#                             nodes, stop, check nothing is left (CI runs it)
#
# HERD_DEMO_PORT sets the HTTP port (default 8080; a free one if taken).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true

go build -o bin/herd-front ./cmd/front
go build -o bin/herd-node ./cmd/node
go build -o bin/herdctl ./cmd/ctl

work=$(mktemp -d "${TMPDIR:-/tmp}/herd-demo.XXXXXX")
# Under root, workers run as nobody and must reach their releases in here.
chmod 755 "$work"
pids=()
cleanup() {
	trap - EXIT INT TERM
	echo
	echo "stopping the demo cluster..."
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 1 400); do
		alive=0
		for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.1
	done
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if $smoke; then
		left=$(leftovers)
		if [ -n "$left" ]; then
			echo "FAIL: processes left behind: $left" >&2
			exit 1
		fi
		rm -rf "$work"
	else
		echo "stopped; logs are in $work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Processes whose working directory is inside the demo's directory.
leftovers() {
	local p out=""
	for p in /proc/[0-9]*; do
		case "$(readlink "$p/cwd" 2>/dev/null)" in "$work"/*) out="$out ${p#/proc/}" ;; esac
	done
	echo "$out"
}

addr() { # addr DATADIR KEY: wait for the process to write its addresses
	for _ in $(seq 1 200); do
		if [ -f "$1/addrs.json" ]; then
			sed -n "s/.*\"$2\": \"\([^\"]*\)\".*/\1/p" "$1/addrs.json"
			return
		fi
		sleep 0.05
	done
	echo "a herd process did not start; see the logs in $work" >&2
	exit 1
}

free() { # free PORT: prints PORT if nothing listens on it, else 0 (the kernel picks)
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		echo "port $1 is taken; using a free one" >&2
		echo 0
	else
		echo "$1"
	fi
}
port=$(free "${HERD_DEMO_PORT:-8080}")
grpcport=$(free 7700)

bin/herd-front --data-dir "$work/front" --name front-1 --http "127.0.0.1:$port" \
	--grpc "127.0.0.1:$grpcport" --admin 127.0.0.1:0 --gossip 127.0.0.1:0 --raft 127.0.0.1:0 >"$work/front.log" 2>&1 &
pids+=($!)
http=$(addr "$work/front" http)
grpc=$(addr "$work/front" grpc)
gossip=$(addr "$work/front" gossip)

for i in 1 2 3; do
	bin/herd-node --data-dir "$work/node-$i" --name "node-$i" --advertise 127.0.0.1 \
		--gossip 127.0.0.1:0 --grpc 127.0.0.1:0 --admin 127.0.0.1:0 --join "$gossip" --cluster-key-file "$work/front/cluster.key" \
		--port-range "2${i}000-2${i}999" >"$work/node-$i.log" 2>&1 &
	pids+=($!)
	addr "$work/node-$i" grpc >/dev/null
done

# The front wrote the admin's credentials (mTLS) when it bootstrapped.
export HERD_CONFIG=$work/front/admin.herdctl
export HERD_ADDR=$grpc
for _ in $(seq 1 100); do
	[ "$(bin/herdctl nodes | grep -c ' alive')" = 4 ] && break
	sleep 0.1
done

mkdir -p "$work/hello"
CGO_ENABLED=0 go build -o "$work/hello/hello" ./examples/hello
bin/herdctl deploy hello "$work/hello" --cmd 'exec ./hello' --workers 2 \
	--host hello.localhost --health /healthz

hport=${http##*:}
if $smoke; then
	seen=""
	for _ in $(seq 1 30); do
		seen="$seen $(curl -fsS -H 'Host: hello.localhost' "http://$http/" | sed -n 's/.*"node":"\([^"]*\)".*/\1/p')"
	done
	n=$(echo "$seen" | tr ' ' '\n' | sort -u | grep -c node- || true)
	bin/herdctl status
	if [ "$n" != 3 ]; then
		echo "FAIL: answers came from $n nodes, want 3:$seen" >&2
		exit 1
	fi
	echo "smoke: OK (answers from 3 nodes)"
	exit 0
fi

cat <<MSG

herd is running: 1 front, 3 nodes, app "hello" with 2 workers per node.

  Open   http://hello.localhost:$hport/        (browsers resolve *.localhost to loopback)
  or     curl -H 'Host: hello.localhost' http://$http/

Everything is mTLS: the first front made the cluster CA, the cluster key
($work/front/cluster.key, which the nodes joined with) and the admin's
herdctl config. Try (in another shell):
  export HERD_CONFIG=$work/front/admin.herdctl
  bin/herdctl nodes
  bin/herdctl status
  bin/herdctl deploy hello $work/hello --cmd 'exec ./hello' --workers 3 --host hello.localhost --health /healthz --batch 1
  bin/herdctl history hello

Logs: $work/*.log. Press Ctrl-C to stop everything.
MSG
wait
