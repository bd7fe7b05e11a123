"""On-demand virtual hosts (VHDS) against full mesh with real Envoys at W-M (issue 18).

`make bench-vhds` runs it: `SEXTANT_BIN` (a release `sextant`), `ENVOY`, and
`SEXTANT_BENCH_ENVOYS` (default 5) and `SEXTANT_BENCH_WARM` (hosts each on-demand Envoy asks
for before the changes, default 20). For each mode (`full`: `sextant bootstrap --delta`;
`vhds`: `--vhds`) it starts `sextant serve --vhds` on W-M written by `wm.py`, N Envoys on
127.0.81-82.x, a backend on 127.0.77.1:8080, and prints one JSON line: time to LIVE, first and
second request latency of a host not yet fetched, an unknown host's answer, Envoy memory, and
for five VirtualService changes the bytes each Envoy received, the time until each applied it
(its RDS/VHDS `update_time` gauge against the write) and Sextant's CPU. Envoys are read only
after the fact, never timed by polling.
"""
import json, os, socket, subprocess, sys, time, urllib.request, urllib.error, signal, tempfile
ENVOY = os.environ.get("ENVOY") or os.path.join(os.getcwd(), ".venv/bin/envoy")
S = os.environ["SEXTANT_BIN"]
HERE = os.path.dirname(os.path.abspath(__file__))
WORK = tempfile.mkdtemp(prefix="sextant-bench-vhds-")
N = int(os.environ.get("SEXTANT_BENCH_ENVOYS", "5"))
WARM = int(os.environ.get("SEXTANT_BENCH_WARM", "20"))

def free_ports(n):
    ss = [socket.socket() for _ in range(n)]
    for s in ss: s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in ss]
    for s in ss: s.close()
    return ports

def get(url, host=None, timeout=5):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read(); code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except Exception as e:
        code = str(e)
    return code, time.perf_counter() - t

def stats(admin):
    with urllib.request.urlopen(f"http://{admin}/stats", timeout=30) as r:
        out = {}
        for line in r.read().decode().splitlines():
            k, _, v = line.partition(": ")
            out[k] = v
        return out

def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1]) / 1024

def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def run(mode):
    d = os.path.join(WORK, f"run-{mode}")
    subprocess.run(["rm", "-rf", d]); os.makedirs(d)
    subprocess.run(["python3", os.path.join(HERE, "wm.py"), os.path.join(d, "cfg"), "90"], check=True)
    xds, sx, adm, wh = free_ports(4)
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(d, "state"))
    serve = subprocess.Popen([S, "serve", "--config-dir", os.path.join(d, "cfg"), "--listen-address", "127.0.0.1",
        "--xds-port", str(xds), "--secure-xds-port", str(sx), "--admin-port", str(adm), "--webhook-port", str(wh),
        "--vhds"], env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "serve.log"), "w"))
    while True:
        c, _ = get(f"http://127.0.0.1:{adm}/ready", timeout=1)
        if c == 200: break
        time.sleep(0.2)
    envoys = []
    net = 81 if mode == "full" else 82
    t_start = time.time()
    for i in range(N):
        s = 3 * i  # a service of namespace ns-(3i % 100)
        node = f"sidecar~127.0.{net}.{50+i}~svc-{s}-0.ns-{s % 100}~ns-{s % 100}.svc.cluster.local"
        bind = f"127.0.{net}.{10+i}"
        args = [S, "bootstrap", "--node-id", node, "--bind-address", bind, "--admin-port", "0",
                "--xds-address", f"127.0.0.1:{xds}", "--delta" if mode == "full" else "--vhds"]
        b = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        bp = os.path.join(d, f"envoy-{i}.yaml"); open(bp, "w").write(b)
        ap = os.path.join(d, f"envoy-{i}.admin")
        p = subprocess.Popen([ENVOY, "-c", bp, "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning",
            "--admin-address-path", ap], stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, f"envoy-{i}.log"), "w"))
        envoys.append({"p": p, "ap": ap, "bind": bind})
    for e in envoys:
        while not (os.path.exists(e["ap"]) and open(e["ap"]).read().strip()): time.sleep(0.1)
        e["admin"] = open(e["ap"]).read().strip()
        while True:
            try:
                with urllib.request.urlopen(f"http://{e['admin']}/ready", timeout=2) as r:
                    if r.read().decode().strip() == "LIVE": break
            except Exception: pass
            time.sleep(0.2)
    configured = time.time() - t_start
    res = {"mode": mode, "envoys": N, "configured_s": round(configured, 2)}
    # Working set: WARM hosts asked for (upstreams do not exist: the request is cut short).
    for e in envoys:
        for s in range(WARM):
            get(f"http://{e['bind']}:8080/", host=f"svc-{s}.ns-{s % 100}:8080", timeout=0.3)
    time.sleep(1)
    # First request of a host not yet fetched (bench-echo, a real backend), then the second.
    first, second = [], []
    for e in envoys:
        c1, t1 = get(f"http://{e['bind']}:8080/", host="bench-echo.ns-0:8080")
        c2, t2 = get(f"http://{e['bind']}:8080/", host="bench-echo.ns-0:8080")
        first.append((c1, round(t1 * 1000, 2))); second.append((c2, round(t2 * 1000, 2)))
    res["first_request_ms"] = first; res["second_request_ms"] = second
    c404, t404 = get(f"http://{envoys[0]['bind']}:8080/", host="nowhere.example:8080")
    res["unknown_host"] = (c404, round(t404 * 1000, 2))
    time.sleep(1)
    res["rss_mib"] = [round(rss_mib(e["p"].pid), 1) for e in envoys]
    st = [stats(e["admin"]) for e in envoys]
    res["memory_allocated_mib"] = [round(int(x.get("server.memory_allocated", 0)) / 2**20, 1) for x in st]
    gauge = "http.outbound_0.0.0.0_8080.rds.8080.update_time" if mode == "full" else "http.outbound_0.0.0.0_8080.rds.vhds.8080.update_time"
    rx = "cluster.xds-grpc.upstream_cx_rx_bytes_total"
    changes = []
    for k, w in enumerate([70, 50, 30, 80, 60]):
        before = [int(x[rx]) for x in [stats(e["admin"]) for e in envoys]]
        cpu0 = cpu_s(serve.pid)
        t0 = time.time()
        with open(os.path.join(d, "cfg", "svc-2.yaml.tmp"), "w") as f:
            f.write(json.dumps({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "svc-2", "namespace": "ns-2"},
                "spec": {"hosts": ["svc-2"], "http": [
                    {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}],
                     "route": [{"destination": {"host": "svc-2", "subset": "v2"}}]},
                    {"name": "split", "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s",
                     "route": [{"destination": {"host": "svc-2", "subset": "v1"}, "weight": w},
                               {"destination": {"host": "svc-2", "subset": "v2"}, "weight": 100 - w}]}]}}))
        os.rename(os.path.join(d, "cfg", "svc-2.yaml.tmp"), os.path.join(d, "cfg", "svc-2.yaml"))
        time.sleep(4)
        cpu1 = cpu_s(serve.pid)
        after = [stats(e["admin"]) for e in envoys]
        upd = [int(x[gauge]) / 1000 - t0 for x in after]
        changes.append({"weight": w, "applied_s": [round(u, 3) for u in upd], "all_s": round(max(upd), 3),
                        "rx_bytes": [int(x[rx]) - b for x, b in zip(after, before)],
                        "server_cpu_s": round(cpu1 - cpu0, 3)})
    res["changes"] = changes
    for e in envoys: e["p"].send_signal(signal.SIGTERM)
    serve.send_signal(signal.SIGTERM)
    for e in envoys: e["p"].wait()
    serve.wait()
    return res

backend = subprocess.Popen(["python3", "-m", "http.server", "--bind", "127.0.77.1", "8080"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=WORK)
try:
    for mode in sys.argv[1:] or ["full", "vhds"]:
        print(json.dumps(run(mode)), flush=True)
finally:
    backend.terminate()
    subprocess.run(["rm", "-rf", WORK])
