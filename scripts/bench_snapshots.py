#!/usr/bin/env python3
"""Drives scripts/bench-snapshots: a `redwall serve` on its defaults with
INSTANCES Node-RED instances; times snapshot create, rollback of a
1,000-node flow, and its rollout to every instance. Prints the raw times
and the medians."""

import base64
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROUNDS = int(os.environ.get("ROUNDS", "5"))
INSTANCES = int(os.environ.get("INSTANCES", "50"))
PORT = int(os.environ.get("PORT", "24500"))
BIN = os.environ["REDWALL_BIN"]
PASSWORD = "violet-harbor-copper-9"
CACHED_NODE_RED = "/var/tmp/redwall-test-node-red/node-red-4.1.8/node_modules/node-red"
TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE  # the hub's own self-signed certificate


def flows_1000(greeting):
    """10 tabs of 100 nodes: 20 chains of inject -> function -> change ->
    switch -> debug per tab."""
    nodes = []
    for t in range(10):
        tab = f"tab{t}"
        nodes.append({"id": tab, "type": "tab", "label": f"Line {t}"})
        for c in range(20):
            ids = [f"{tab}n{c}x{k}" for k in range(5)]
            y = 40 + c * 40
            nodes += [
                {"id": ids[0], "type": "inject", "z": tab, "name": "", "props": [{"p": "payload"}],
                 "repeat": "", "once": False, "topic": "", "payload": "", "payloadType": "date",
                 "x": 100, "y": y, "wires": [[ids[1]]]},
                {"id": ids[1], "type": "function", "z": tab, "name": f"scale {c}",
                 "func": f"// chain {c}\nconst k = {c};\nmsg.payload = '{greeting} ' + (msg.payload * k);\nreturn msg;",
                 "outputs": 1, "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": [],
                 "x": 260, "y": y, "wires": [[ids[2]]]},
                {"id": ids[2], "type": "change", "z": tab, "name": "",
                 "rules": [{"t": "set", "p": "topic", "pt": "msg", "to": f"line/{t}/{c}", "tot": "str"}],
                 "x": 420, "y": y, "wires": [[ids[3]]]},
                {"id": ids[3], "type": "switch", "z": tab, "name": "", "property": "payload",
                 "propertyType": "msg", "rules": [{"t": "nnull"}], "checkall": "true", "repair": False,
                 "outputs": 1, "x": 560, "y": y, "wires": [[ids[4]]]},
                {"id": ids[4], "type": "debug", "z": tab, "name": "", "active": False, "tosidebar": True,
                 "console": False, "tostatus": False, "complete": "false", "x": 700, "y": y, "wires": []},
            ]
    assert len([n for n in nodes if n["type"] != "tab"]) == 1000
    return nodes


class Api:
    def __init__(self, base, token=None):
        self.base, self.token = base, token

    def call(self, method, path, body=None, timeout=600):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if self.token:
            req.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, context=TLS, timeout=timeout) as r:
                text = r.read().decode()
                return r.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode() or "null")

    def ok(self, method, path, body=None):
        status, v = self.call(method, path, body)
        if not 200 <= status < 300:
            sys.exit(f"{method} {path}: {status} {v}")
        return v


def main():
    work = tempfile.mkdtemp(prefix="redwall-bench-snapshots-")
    # Instances run as their own users, who must pass through it.
    os.chmod(work, 0o711)
    node_red = f'node_red_path = "{CACHED_NODE_RED}"\n' if os.path.isdir(CACHED_NODE_RED) else ""
    config = f"""data_dir = "{work}/hub"
[server]
listen = "127.0.0.1:{PORT}"
[passwords]
memory_kib = 1024
iterations = 1
parallelism = 1
[broker]
enabled = false
[instances]
{node_red}port_min = {PORT + 100}
port_max = {PORT + 100 + INSTANCES + 10}
uid_base = 300000
"""
    with open(f"{work}/redwall.toml", "w") as f:
        f.write(config)
    log = open(f"{work}/hub.log", "w")
    hub = subprocess.Popen([BIN, "serve", "--config", f"{work}/redwall.toml"],
                           stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        run(hub, work)
    finally:
        hub.terminate()
        try:
            hub.wait(timeout=120)
        except subprocess.TimeoutExpired:
            hub.kill()


def run(hub, work):
    base = f"https://127.0.0.1:{PORT}"
    token = None
    deadline = time.time() + 600
    while token is None:
        line = hub.stdout.readline()
        if not line and hub.poll() is not None:
            sys.exit(f"redwall exited; see {work}/hub.log")
        m = re.search(r"rws_[A-Za-z0-9_-]+", line)
        token = m.group(0) if m else None
        if time.time() > deadline:
            sys.exit("no setup token")
    anon = Api(base)
    for _ in range(600):
        try:
            if anon.call("GET", "/healthz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    anon.ok("POST", "/api/v1/setup", {"setup_token": token, "username": "admin", "password": PASSWORD})
    # A personal token through a session.
    req = urllib.request.Request(base + "/api/v1/auth/login", method="POST",
                                 data=json.dumps({"username": "admin", "password": PASSWORD}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, context=TLS) as r:
        cookie = r.headers["set-cookie"].split(";")[0]
        csrf = json.loads(r.read())["csrf_token"]
    req = urllib.request.Request(base + "/api/v1/me/tokens", method="POST",
                                 data=json.dumps({"name": "bench", "scope": "full"}).encode(),
                                 headers={"content-type": "application/json", "cookie": cookie,
                                          "x-csrf-token": csrf, "origin": base})
    with urllib.request.urlopen(req, context=TLS) as r:
        pat = json.loads(r.read())["token"]
    api = Api(base, pat)
    team = api.ok("POST", "/api/v1/teams", {"name": "Bench"})["id"]
    t = f"/api/v1/teams/{team}"
    names = [f"b{i:02d}" for i in range(1, INSTANCES + 1)]
    started = time.time()
    for n in names:
        api.ok("POST", f"{t}/instances", {"name": n, "start": True})
    while True:
        states = [api.ok("GET", f"{t}/instances/{n}")["status"]["state"] for n in names]
        if all(s == "running" for s in states):
            break
        if time.time() - started > 900:
            sys.exit(f"instances not running: {states}")
        time.sleep(1)
    print(f"# {INSTANCES} instances running after {time.time() - started:.1f} s")
    print(f"# machine: {os.cpu_count()} cores; redwall {BIN}")

    first = names[0]
    flows = {}
    for greeting in ("Hello", "Howdy"):
        body = {"file": base64.b64encode(json.dumps(flows_1000(greeting)).encode()).decode(),
                "note": f"1000 nodes, {greeting}"}
        flows[greeting] = api.ok("POST", f"{t}/instances/{first}/snapshots/import", body)["snapshot"]["id"]

    rollback, create = [], []
    for r in range(ROUNDS):
        for greeting in ("Hello", "Howdy"):
            t0 = time.perf_counter()
            d = api.ok("POST", f"{t}/instances/{first}/rollback", {"snapshot": flows[greeting]})
            rollback.append(time.perf_counter() - t0)
            if d["status"] != "done":
                sys.exit(f"rollback: {d}")
        t0 = time.perf_counter()
        api.ok("POST", f"{t}/instances/{first}/snapshots", {"note": f"round {r}"})
        create.append(time.perf_counter() - t0)
    print("rollback_s " + " ".join(f"{x:.3f}" for x in rollback))
    print("create_s " + " ".join(f"{x:.3f}" for x in create))

    api.ok("PUT", f"{t}/groups/fleet", {"instances": names})
    rollout = []
    for r in range(2):
        greeting = ("Hello", "Howdy")[r % 2]
        # Every instance runs the other flow first, so each deploy changes it.
        t0 = time.perf_counter()
        done = api.ok("POST", f"{t}/deploys",
                      {"snapshot": flows[greeting], "target": {"kind": "group", "name": "fleet"}})
        took = time.perf_counter() - t0
        statuses = [d["status"] for d in done]
        if statuses.count("done") != INSTANCES:
            sys.exit(f"rollout: {statuses}")
        rollout.append(took)
    print("rollout_s " + " ".join(f"{x:.3f}" for x in rollout))
    print(f"median create {statistics.median(create):.3f} s, rollback {statistics.median(rollback):.3f} s "
          f"(1,000 nodes); rollout to {INSTANCES} instances {statistics.median(rollout):.1f} s "
          f"(second run: {rollout[-1]:.1f} s)")


if __name__ == "__main__":
    main()
