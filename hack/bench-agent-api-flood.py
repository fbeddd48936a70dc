#!/usr/bin/env python3
"""Idle TLS connections without an agent SVID flood the server's agent API (issue 13 item 4), and
idle connections flood the Workload API (item 9). Starts `signet quickstart` (server + agent in one
process), then prints its RSS and CPU and the latency of legitimate calls before, during and after.

Usage: hack/bench-agent-api-flood.py [--signet target/release/signet] [--connections 19800]
       [--sources 200]
The descriptor soft limit is raised to the hard one; the flood comes from 127.0.0.2.. (one address per source).
"""
import argparse
import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_open(connection):
    """Drains what the server sent (its HTTP/2 SETTINGS); open unless it also closed."""
    connection.setblocking(False)
    try:
        while connection.recv(65536):
            pass
        return False
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except OSError:
        return False


def handshake_ms(port):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                with context.wrap_socket(raw):
                    pass
        except OSError as error:
            return f"failed ({error})"
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return f"p50 {samples[len(samples) // 2]:.1f} ms, max {samples[-1]:.1f} ms"


def fetch_ms(signet, socket_path):
    samples = []
    for _ in range(10):
        start = time.perf_counter()
        done = subprocess.run([signet, "svid", "fetch", "--socket", f"unix://{socket_path}"],
                              capture_output=True)
        if done.returncode != 0:
            return "failed"
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return f"p50 {samples[len(samples) // 2]:.1f} ms, max {samples[-1]:.1f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signet", default="target/release/signet")
    parser.add_argument("--connections", type=int, default=19800)
    parser.add_argument("--sources", type=int, default=200)
    parser.add_argument("--idle-connections", type=int, default=1000)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp()
    os.chmod(work, 0o755)
    port = 20000 + os.getpid() % 20000
    log = open(os.path.join(work, "quickstart.log"), "w")
    env = dict(os.environ, SIGNET_IDLE_CONNECTION_TIMEOUT="10s")
    daemon = subprocess.Popen([args.signet, "quickstart", "--data-dir", f"{work}/qs",
                               "--bind-address", f"127.0.0.1:{port}"], stdout=log, stderr=log, env=env)
    socket_path = f"{work}/qs/sockets/api.sock"
    try:
        for _ in range(300):
            if subprocess.run([args.signet, "svid", "fetch", "--socket", f"unix://{socket_path}"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        pid = daemon.pid
        print(f"before: RSS {rss_kb(pid) // 1024} MB; agent API handshake {handshake_ms(port)}; "
              f"svid fetch {fetch_ms(args.signet, socket_path)}")

        # Item 4: idle TLS connections without client certificates, spread over sources.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        held, refused = [], 0
        cpu_before = cpu_seconds(pid)
        start = time.time()
        per_source = max(1, args.connections // args.sources)
        for n in range(args.connections):
            source = f"127.0.0.{2 + (n // per_source) % 250}"
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                               source_address=(source, 0))
                held.append(context.wrap_socket(raw))
            except OSError:
                refused += 1
        took = time.time() - start
        open_now = sum(1 for connection in held if is_open(connection))
        print(f"agent API flood: {len(held)} TLS handshakes without a client certificate "
              f"completed, {refused} refused at connect, in {took:.0f} s from {args.sources} "
              f"sources; {open_now} still open at the end of the flood")
        print(f"  during: RSS {rss_kb(pid) // 1024} MB; server CPU {cpu_seconds(pid) - cpu_before:.1f} s "
              f"while opening; agent API handshake {handshake_ms(port)}; "
              f"svid fetch {fetch_ms(args.signet, socket_path)}")
        time.sleep(65)
        still = sum(1 for connection in held if is_open(connection))
        print(f"  after the 60 s attestation lifetime: {still} of {len(held)} still open; "
              f"RSS {rss_kb(pid) // 1024} MB")
        for connection in held:
            connection.close()

        # Item 9: idle Workload API connections that never send a request.
        idle = [socket.socket(socket.AF_UNIX) for _ in range(args.idle_connections)]
        for connection in idle:
            connection.connect(socket_path)
        time.sleep(1)
        print(f"workload API: {len(idle)} idle connections: RSS {rss_kb(pid) // 1024} MB; "
              f"svid fetch {fetch_ms(args.signet, socket_path)}")
        time.sleep(12)
        closed = 0
        for connection in idle:
            connection.setblocking(False)
            try:
                while True:
                    data = connection.recv(65536)
                    if data == b"":
                        closed += 1
                        break
            except BlockingIOError:
                pass
        print(f"  after the idle timeout (10 s here, 5 min by default): {closed} of {len(idle)} "
              f"closed; RSS {rss_kb(pid) // 1024} MB")
    finally:
        daemon.terminate()
        daemon.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
