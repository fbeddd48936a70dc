#!/usr/bin/env python3
"""signet proxy vs HAProxy vs direct, in one run (issue 19 item 1). Run through
hack/bench-proxy.sh, which installs haproxy, nginx and wrk and builds the release binary.

Topology, everything on loopback of this machine:
  direct : wrk -> nginx
  signet : wrk -> signet proxy (outbound: plaintext in, mTLS out with the frontend SVID)
               -> signet proxy (inbound: mTLS in, SPIFFE ID + AuthorizationPolicy checked) -> nginx
  haproxy: wrk -> HAProxy (frontend plaintext, backend "ssl crt <frontend SVID>", server verified
                 against the bundle) -> HAProxy (bind "ssl crt <backend SVID> verify required",
                 client chain verified against the bundle) -> nginx

Both pairs use the same SVIDs (HAProxy's files written by `signet helper --once`) and the same
thread count (HAProxy nbthread = the signet proxy's worker threads = the machine's cores). Modes:
HTTP/1.1 keep-alive, a new connection per request, and TCP (L4) keep-alive. Several rounds,
alternating the targets, and the median of each; prints requests/s, p50, p99 and the proxies'
CPU seconds per 10,000 requests, and the ratios signet/HAProxy and signet/direct.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TD = "example.org"
FRONTEND = f"spiffe://{TD}/frontend"
BACKEND = f"spiffe://{TD}/backend"
GID_FRONTEND, GID_BACKEND = 4001, 4002
CORES = os.cpu_count() or 2
TCP_POLICY_PORT = 9000
# (title, protocol, new connection per request, --modes name)
MODES = [("keep-alive HTTP/1.1", "http", False, "keepalive"),
         ("HTTP/2, 10 streams per connection", "h2", False, "h2"),
         ("new connection per request", "http", True, "close"),
         ("TCP (L4), keep-alive", "tcp", False, "tcp")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def cpu_seconds(pids):
    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(") ", 1)[1].split()
        total += (int(rest[11]) + int(rest[12])) / hz
        # HAProxy and nginx workers are children: count them too.
        for child in children(pid):
            with open(f"/proc/{child}/stat") as f:
                rest = f.read().rsplit(") ", 1)[1].split()
            total += (int(rest[11]) + int(rest[12])) / hz
    return total


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


class Stack:
    def __init__(self, signet, workdir):
        self.signet = signet
        self.dir = workdir
        self.procs = []

    def spawn(self, args, name, gid=None, env=None):
        log = open(os.path.join(self.dir, f"{name}.log"), "w")
        kwargs = {}
        if gid is not None:
            kwargs["group"] = gid
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=env, **kwargs)
        self.procs.append(proc)
        return proc

    def admin(self, *args):
        out = subprocess.run(
            [self.signet, *args, "--admin-socket", os.path.join(self.dir, "server/admin.sock")],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"signet {' '.join(args)}: {out.stderr}")
        return out.stdout

    def stop(self):
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def start(stack):
    d = stack.dir
    quiet = dict(os.environ, SIGNET_LOG="warn")
    port, health = free_port(), free_port()
    stack.spawn([stack.signet, "server", "--trust-domain", TD, "--data-dir", f"{d}/server",
                 "--bind-address", f"127.0.0.1:{port}", "--health-address", f"127.0.0.1:{health}"],
                "server", env=quiet)
    deadline = time.time() + 60
    while not os.path.exists(f"{d}/server/admin.sock") and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    token = json.loads(stack.admin("token", "create", "-o", "json"))["token"]
    socket_path = f"{d}/sockets/api.sock"
    stack.spawn([stack.signet, "agent", "--trust-domain", TD, "--server-address", f"127.0.0.1:{port}",
                 "--trust-bundle", f"{d}/server/bundle.pem", "--data-dir", f"{d}/agent",
                 "--socket-path", socket_path, "--join-token", token,
                 "--health-address", f"127.0.0.1:{free_port()}"], "agent", env=quiet)
    while not os.path.exists(socket_path) and time.time() < deadline:
        time.sleep(0.1)
    agent_id = json.loads(stack.admin("agent", "list", "-o", "json"))[0]["spiffe_id"]
    for spiffe_id, gid in [(FRONTEND, GID_FRONTEND), (BACKEND, GID_BACKEND)]:
        stack.admin("entry", "create", "--spiffe-id", spiffe_id, "--parent-id", agent_id,
                    "--selector", f"unix:gid:{gid}")
    policy = f"{d}/policy.yaml"
    with open(policy, "w") as f:
        f.write(
            "apiVersion: signet.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: readers}\n"
            f"spec:\n  targetSPIFFEIDs: [\"{BACKEND}\"]\n  action: ALLOW\n  rules:\n"
            f"  - from: [{{spiffeIDs: [\"{FRONTEND}\"]}}]\n    to: [{{methods: [GET], paths: [\"/items/*\"]}}]\n"
            # The TCP pair is authorized by peer and port only.
            f"  - from: [{{spiffeIDs: [\"{FRONTEND}\"]}}]\n    to: [{{ports: [{TCP_POLICY_PORT}]}}]\n")
    stack.admin("policy", "apply", "-f", policy)
    endpoint = f"unix://{socket_path}"
    # The same SVIDs for HAProxy, as files.
    for name, gid in [("frontend", GID_FRONTEND), ("backend", GID_BACKEND)]:
        out = subprocess.run([stack.signet, "helper", "--socket", endpoint, "--dir", f"{d}/{name}",
                              "--cert-file", "cert.pem", "--key-file", "key.pem",
                              "--bundle-file", "bundle.pem", "--once", "--once-timeout", "30s"],
                             group=gid, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"signet helper for {name}: {out.stderr}")
        with open(f"{d}/{name}.pem", "w") as pem:
            pem.write(open(f"{d}/{name}/cert.pem").read() + open(f"{d}/{name}/key.pem").read())
        shutil.copy(f"{d}/{name}/bundle.pem", f"{d}/bundle.pem")
    return endpoint


def nginx(stack):
    port, h2_port = free_port(), free_port()
    d = stack.dir
    conf = f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{ return 200 "ok\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{h2_port} http2;
    http2_max_requests 10000000;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(conf)
    stack.spawn(["nginx", "-c", f"{d}/nginx.conf", "-p", d], "nginx")
    wait_port(port)
    wait_port(h2_port)
    return port, h2_port


def signet_pair(stack, endpoint, app, protocol, inbound_prefix=()):
    inbound, outbound = free_port(), free_port()
    common = [stack.signet, "proxy", "--workload-api", endpoint, "--log-level", "warn"]
    inbound_proc = stack.spawn(list(inbound_prefix) + common + ["--inbound-listen", f"127.0.0.1:{inbound}",
                                         "--inbound-forward", f"127.0.0.1:{app}",
                                         "--inbound-protocol", "tcp" if protocol == "tcp" else "http"]
                               + (["--policy-port", str(TCP_POLICY_PORT)] if protocol == "tcp" else []),
                               f"signet-inbound-{protocol}", gid=GID_BACKEND)
    outbound_proc = stack.spawn(common + ["--outbound", f"127.0.0.1:{outbound},127.0.0.1:{inbound},{BACKEND}"],
                                f"signet-outbound-{protocol}", gid=GID_FRONTEND)
    wait_port(inbound, timeout=180 if inbound_prefix else 30)
    wait_port(outbound)
    return outbound, [inbound_proc.pid, outbound_proc.pid]


def keep_alive_requests(port, count):
    """`count` GETs on one keep-alive connection; returns how many were answered 200."""
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ok = 0
    for _ in range(count):
        connection.request("GET", "/items/1")
        response = connection.getresponse()
        response.read()
        ok += response.status == 200
    connection.close()
    return ok


def count_instructions(args):
    """Instructions the inbound signet proxy executes per proxied request (mTLS in, SPIFFE ID
    and policy checked, forwarded to nginx over HTTP/1.1, answer relayed), counted by callgrind
    over `args.instructions` keep-alive requests after a warm-up."""
    workdir = tempfile.mkdtemp(prefix="signet-instructions-")
    os.chmod(workdir, 0o755)
    stack = Stack(args.signet, workdir)
    out = f"{workdir}/callgrind.out"
    try:
        endpoint = start(stack)
        app, _ = nginx(stack)
        prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        port, pids = signet_pair(stack, endpoint, app, "http", inbound_prefix=prefix)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if keep_alive_requests(port, 1) == 1:
                    break
            except OSError:
                pass
            time.sleep(1)
        keep_alive_requests(port, 50)
        inbound_pid = pids[0]
        subprocess.run(["callgrind_control", "-i", "on", str(inbound_pid)], check=True, capture_output=True)
        if args.instructions_h2:
            subprocess.run(["h2load", "-n", str(args.instructions), "-c", "1", "-m", "10",
                            f"http://127.0.0.1:{port}/items/1"], check=True, capture_output=True)
            answered = args.instructions
        else:
            answered = keep_alive_requests(port, args.instructions)
        subprocess.run(["callgrind_control", "-i", "off", str(inbound_pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(inbound_pid)], check=True, capture_output=True)
        assert answered == args.instructions, f"{answered} of {args.instructions} answered"
        time.sleep(2)
        # The dump written by `callgrind_control -d` holds exactly the measured requests.
        total = 0
        for name in os.listdir(workdir):
            if name.startswith("callgrind.out"):
                with open(f"{workdir}/{name}") as f:
                    for line in f:
                        if line.startswith(("summary:", "totals:")):
                            total = max(total, int(line.split()[1]))
        print(f"proxied_request{'_h2' if args.instructions_h2 else ''} {total // args.instructions}")
        if os.environ.get("KEEP_CALLGRIND"):
            for name in os.listdir(workdir):
                if name.startswith("callgrind.out."):
                    shutil.copy(f"{workdir}/{name}", os.environ["KEEP_CALLGRIND"])
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def haproxy_pair(stack, app, protocol):
    d = stack.dir
    inbound, outbound = free_port(), free_port()
    mode = "tcp" if protocol == "tcp" else "http"
    # HTTP/2: h2c from the client, h2 over the mTLS hop, HTTP/1.1 to the application (as the
    # signet pair does).
    h2 = protocol == "h2"
    # HAProxy verifies both chains against the bundle but cannot match a URI SAN (the SPIFFE
    # ID) or evaluate a policy: it does less per connection and request than the signet pair.
    conf = f"""
global
  nbthread {CORES}
  maxconn 4096
  tune.ssl.default-dh-param 2048
defaults
  mode {mode}
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option {"http-keep-alive" if mode == "http" else "dontlognull"}
frontend outbound
  bind 127.0.0.1:{outbound}{" proto h2" if h2 else ""}
  default_backend to_inbound
backend to_inbound
  server inbound 127.0.0.1:{inbound} ssl crt {d}/frontend.pem ca-file {d}/bundle.pem verify required{" alpn h2" if h2 else ""}
frontend inbound
  bind 127.0.0.1:{inbound} ssl crt {d}/backend.pem ca-file {d}/bundle.pem verify required{" alpn h2" if h2 else ""}
  default_backend app
backend app
  server app 127.0.0.1:{app}
"""
    path = f"{d}/haproxy-{protocol}.cfg"
    with open(path, "w") as f:
        f.write(conf)
    proc = stack.spawn(["haproxy", "-f", path, "-db"], f"haproxy-{protocol}")
    wait_port(inbound)
    wait_port(outbound)
    return outbound, [proc.pid]


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    total = int(re.search(r"(\d+) requests in", text).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", text, re.M)
        lat[pct] = float(m.group(1)) * UNITS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {"rps": rps, "total": total, "p50": lat["50"], "p99": lat["99"],
            "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


def run_wrk(port, seconds, connections, close):
    args = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    args.append(f"http://127.0.0.1:{port}/items/1")
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return parse_wrk(out.stdout)


def run_h2load(port, seconds, connections, workdir):
    """h2load over h2c prior knowledge, 10 concurrent streams per connection; percentiles from
    its per-request log."""
    log = os.path.join(workdir, "h2load.log")
    # h2load appends to its log: start empty, or the counts of earlier runs are mixed in.
    if os.path.exists(log):
        os.remove(log)
    out = subprocess.run(["h2load", "-t", str(min(2, connections)), "-c", str(connections), "-m", "10",
                          "-D", str(seconds), "--log-file", log, f"http://127.0.0.1:{port}/items/1"],
                         capture_output=True, text=True, check=True)
    latencies = []
    non2xx = 0
    with open(log) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3:
                non2xx += fields[1] != "200"
                latencies.append(int(fields[2]) / 1000.0)  # µs -> ms
    latencies.sort()
    total = len(latencies)
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out.stdout)
    rps = float(m.group(3)) if m else total / seconds
    pick = lambda q: latencies[min(total - 1, int(q * total))] if total else 0.0
    return {"rps": rps, "total": total, "p50": pick(0.5), "p99": pick(0.99),
            "non2xx": non2xx, "socket_errors": ""}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signet", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--instructions-h2", action="store_true",
                        help="with --instructions: HTTP/2 (h2load, 10 streams) instead of HTTP/1.1 keep-alive")
    parser.add_argument("--modes", default="keepalive,h2,close,tcp",
                        help="comma-separated subset of keepalive,h2,close,tcp")
    parser.add_argument("--instructions", type=int, metavar="N",
                        help="instead: count the inbound proxy's instructions per request over N requests (callgrind)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the two workloads are told apart by unix group")
    if args.instructions:
        return count_instructions(args)

    workdir = tempfile.mkdtemp(prefix="signet-bench-proxy-")
    os.chmod(workdir, 0o755)
    stack = Stack(args.signet, workdir)
    results = {}
    try:
        endpoint = start(stack)
        app, h2_app = nginx(stack)
        targets = {}
        for protocol in ("http", "tcp", "h2"):
            port, pids = signet_pair(stack, endpoint, app, protocol)
            targets[("signet", protocol)] = (port, pids)
            port, pids = haproxy_pair(stack, app, protocol)
            targets[("haproxy", protocol)] = (port, pids)
        targets[("direct", "http")] = (app, [])
        targets[("direct", "tcp")] = (app, [])
        targets[("direct", "h2")] = (h2_app, [])
        # The policy reaches the inbound proxy asynchronously: wait for a 200 through it.
        deadline = time.time() + 30
        while time.time() < deadline:
            r = run_wrk(targets[("signet", "http")][0], 1, 1, False)
            if r["non2xx"] == 0 and r["total"] > 0:
                break
            time.sleep(0.5)
        modes = [m for m in MODES if m[3] in args.modes.split(",")]
        for round_number in range(args.rounds):
            for mode, protocol, close, _ in modes:
                order = ["direct", "signet", "haproxy"]
                if round_number % 2:
                    order.reverse()
                for target in order:
                    port, pids = targets[(target, protocol)]
                    before = cpu_seconds(pids)
                    if protocol == "h2":
                        r = run_h2load(port, args.seconds, args.connections, stack.dir)
                    else:
                        r = run_wrk(port, args.seconds, args.connections, close)
                    r["cpu_per_10k"] = (cpu_seconds(pids) - before) / max(r["total"], 1) * 10_000
                    results.setdefault((mode, target), []).append(r)
                    print(f"round {round_number + 1} {mode:28} {target:8} {r['rps']:>10.0f} req/s  "
                          f"p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                          f"CPU {r['cpu_per_10k']:.2f} s/10k  non-2xx {r['non2xx']} {r['socket_errors']}",
                          flush=True)
    finally:
        stack.stop()

    def median(mode, target, key):
        return statistics.median(r[key] for r in results[(mode, target)])

    print()
    print(f"Medians of {args.rounds} alternating rounds, {args.seconds} s each, {args.connections} connections, "
          f"wrk 2 threads; proxies on {CORES} threads.")
    print()
    print("| mode | target | requests/s | p50 ms | p99 ms | proxy CPU s / 10k requests |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for mode, _, _, _ in modes:
        for target in ("direct", "signet", "haproxy"):
            row = {k: median(mode, target, k) for k in ("rps", "p50", "p99", "cpu_per_10k")}
            summary[f"{mode}/{target}"] = row
            cpu = "—" if target == "direct" else f"{row['cpu_per_10k']:.2f}"
            print(f"| {mode} | {target} | {row['rps']:,.0f} | {row['p50']:.2f} | {row['p99']:.2f} | {cpu} |")
    print()
    print("| mode | signet / HAProxy req/s | signet / direct req/s | p99 signet / HAProxy | CPU signet / HAProxy |")
    print("|---|---|---|---|---|")
    for mode, _, _, _ in modes:
        s, h, d = (summary[f"{mode}/{t}"] for t in ("signet", "haproxy", "direct"))
        print(f"| {mode} | {s['rps'] / h['rps']:.2f} | {s['rps'] / d['rps']:.2f} | "
              f"{s['p99'] / h['p99']:.2f} | {s['cpu_per_10k'] / max(h['cpu_per_10k'], 1e-9):.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
