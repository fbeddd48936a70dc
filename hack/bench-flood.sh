#!/usr/bin/env bash
# A local user floods the Workload API socket with connections (as in the adversarial review):
# prints the signet process's CPU and RSS during the flood and the latency of a legitimate
# `signet svid fetch` before and during it. Needs root (the flood runs as uid 65534 through
# setpriv) and perl. Usage: hack/bench-flood.sh [SIGNET_BIN] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIGNET=${1:-target/release/signet}
CONNECTIONS=${2:-3000}
[[ -x "$SIGNET" ]] || { echo "build it first: cargo build --release -p signet-cli" >&2; exit 1; }
if ! command -v perl >/dev/null || ! command -v setpriv >/dev/null; then
  echo "needs perl and setpriv" >&2
  exit 1
fi

dir=$(mktemp -d)
chmod 755 "$dir"
cleanup() {
  kill "${flood_pid:-}" "${signet_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
"$SIGNET" quickstart --data-dir "$dir/qs" --bind-address "127.0.0.1:$port" >"$dir/quickstart.log" 2>&1 &
signet_pid=$!
socket="$dir/qs/sockets/api.sock"
for _ in $(seq 1 300); do
  "$SIGNET" svid fetch --socket "unix://$socket" >/dev/null 2>&1 && break
  sleep 0.1
done
chmod 755 "$dir/qs"

latency() {
  local start end samples=()
  for _ in $(seq 1 20); do
    start=$(date +%s%N)
    "$SIGNET" svid fetch --socket "unix://$socket" >/dev/null 2>&1 || { echo "fetch failed"; return; }
    end=$(date +%s%N)
    samples+=($(((end - start) / 1000000)))
  done
  printf '%s\n' "${samples[@]}" | sort -n | awk '{a[NR]=$1} END {printf "p50 %d ms, max %d ms\n", a[int(NR/2)+1], a[NR]}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$signet_pid/stat"; }
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$signet_pid/status"; }

echo "before the flood: svid fetch $(latency); RSS $(rss)"
# shellcheck disable=SC2016 # Perl code: its $ variables are Perl's.
setpriv --reuid 65534 --regid 65534 --clear-groups perl -MIO::Socket::UNIX -e '
  my @held;
  for (1 .. $ARGV[1]) { my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]); push @held, $s if $s; }
  print STDERR "flood: ", scalar(@held), " connections open\n";
  sleep 60;' "$socket" "$CONNECTIONS" &
flood_pid=$!
sleep 5
ticks_before=$(cpu_ticks)
sleep 10
ticks_after=$(cpu_ticks)
hz=$(getconf CLK_TCK)
echo "during the flood of $CONNECTIONS connections from uid 65534:"
echo "  signet CPU: $(awk -v t=$((ticks_after - ticks_before)) -v hz="$hz" 'BEGIN {printf "%.2f", t / hz}') s in 10 s"
echo "  RSS: $(rss)"
echo "  legitimate svid fetch: $(latency)"
echo "  log lines: $(wc -l <"$dir/quickstart.log")"
