#!/bin/sh
# run-demo.sh MGR_BINARY EXAMPLE... — run the examples against a manager
# started here on a free loopback port; exit 1 if any example fails.
# MP_DEMO_WRAP, if set, is a command put before each example, and
# MP_DEMO_MGR_VALGRIND one (valgrind and its options) put before the
# manager, whose processes then log to $tmp/vg-mgr.<pid>.log: anything
# logged fails the demo (make demo-valgrind runs both under memcheck).
set -u
mgr=$1
shift
tmp=$(mktemp -d "${TMPDIR:-/tmp}/messip-demo.XXXXXX") || exit 1
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	pid=
	if [ -n "${MP_DEMO_MGR_VALGRIND:-}" ]; then
		sleep 1 # workers exit after the master
		for f in "$tmp"/vg-mgr.*.log; do
			[ -s "$f" ] || continue
			echo "demo: memcheck on the manager ($f):" >&2
			cat "$f" >&2
			mgr_bad=1
		done
	fi
	rm -rf "$tmp"
}
mgr_bad=0
trap 'cleanup; [ $mgr_bad = 0 ] || exit 1' EXIT
trap 'exit 1' INT TERM

# A port nobody listens on: try a few until the manager comes up.
started=0
for attempt in 1 2 3 4 5 6 7 8; do
	port=$(( 20000 + ($$ * 13 + attempt * 7919 + $(date +%s)) % 40000 ))
	cat > "$tmp/mgr.conf" <<CONF
listen 127.0.0.1:$port
status_listen off
workers 2
log_level info
CONF
	${MP_DEMO_MGR_VALGRIND:+$MP_DEMO_MGR_VALGRIND \
		--log-file=$tmp/vg-mgr.%p.log} \
		"$mgr" -f -c "$tmp/mgr.conf" 2> "$tmp/mgr.log" &
	pid=$!
	i=0
	while [ $i -lt 50 ]; do
		if ! kill -0 "$pid" 2>/dev/null; then
			break
		fi
		if grep -q "MESSIP-MGR-START" "$tmp/mgr.log" 2>/dev/null; then
			started=1
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	[ $started = 1 ] && break
	wait "$pid" 2>/dev/null
	pid=
done
if [ $started != 1 ]; then
	echo "demo: could not start $mgr" >&2
	cat "$tmp/mgr.log" >&2
	exit 1
fi
echo "demo: manager on 127.0.0.1:$port"
MESSIP_MGR=127.0.0.1:$port
export MESSIP_MGR

failed=0
for ex in "$@"; do
	name=$(basename "$ex")
	args=
	[ "$name" = ex_throughput ] && args="-t 0.5 0 1024 65536"
	echo "==== $name $args"
	if ${MP_DEMO_WRAP:-} ./"$ex" $args; then
		echo "==== $name: ok"
	else
		echo "==== $name: FAILED"
		failed=$((failed + 1))
	fi
	if [ "$name" = ex_throughput ]; then
		echo "==== $name -b $args"
		if ${MP_DEMO_WRAP:-} ./"$ex" -b $args; then
			echo "==== $name -b: ok"
		else
			echo "==== $name -b: FAILED"
			failed=$((failed + 1))
		fi
	fi
done
if [ $failed -ne 0 ]; then
	echo "demo: $failed example(s) failed" >&2
	exit 1
fi
echo "demo: all examples passed"
