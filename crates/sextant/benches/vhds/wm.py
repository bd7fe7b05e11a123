# W-M manifests (as crates/synthetic builds them) as JSON files, plus one service with a real
# backend (bench-echo, 127.0.77.1:8080) for first-request latency.
import json, os, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
S, NS, E = 1000, 100, 10
def ip(s, e):
    n = s * E + e + 1
    return f"10.{(n>>16)&0xff}.{(n>>8)&0xff}.{n&0xff}"
docs = []
for s in range(S):
    ns = f"ns-{s % NS}"; name = f"svc-{s}"
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": f"172.16.{(s>>8)&0xff}.{s&0xff}", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}]}})
    for e in range(E):
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"svc-{s}-{e}", "namespace": ns,
            "labels": {"app": name, "version": "v1" if e % 2 == 0 else "v2"}},
            "spec": {"serviceAccountName": name, "containers": [{"name": "app", "image": "app"}]},
            "status": {"podIP": ip(s, e)}})
    docs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-slice", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
        "endpoints": [{"addresses": [ip(s, e)], "conditions": {"ready": True}, "zone": f"zone-{e%3}",
                       "targetRef": {"kind": "Pod", "name": f"svc-{s}-{e}", "namespace": ns}} for e in range(E)]})
for s in range(100):
    ns = f"ns-{s % NS}"
    docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": f"svc-{s}", "namespace": ns},
        "spec": {"host": f"svc-{s}", "trafficPolicy": {"connectionPool": {"http": {"http1MaxPendingRequests": 100}},
                 "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"}},
                 "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}})
def vs(s, w):
    host = f"svc-{s}"
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": host, "namespace": f"ns-{s % NS}"},
        "spec": {"hosts": [host], "http": [
            {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}],
             "route": [{"destination": {"host": host, "subset": "v2"}}]},
            {"name": "split", "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s",
             "route": [{"destination": {"host": host, "subset": "v1"}, "weight": w},
                       {"destination": {"host": host, "subset": "v2"}, "weight": 100 - w}]}]}}
for s in range(100):
    if s == 2: continue
    docs.append(vs(s, 90))
docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench-echo", "namespace": "ns-0"},
    "spec": {"clusterIP": "172.17.0.1", "ports": [{"name": "http", "port": 8080}]}})
docs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    "metadata": {"name": "bench-echo-1", "namespace": "ns-0", "labels": {"kubernetes.io/service-name": "bench-echo"}},
    "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": [{"addresses": ["127.0.77.1"]}]})
with open(os.path.join(out, "mesh.yaml"), "w") as f:
    f.write("\n---\n".join(json.dumps(d) for d in docs))
if len(sys.argv) > 2:
    w = int(sys.argv[2])
    with open(os.path.join(out, "svc-2.yaml"), "w") as f:
        f.write(json.dumps(vs(2, w)))
