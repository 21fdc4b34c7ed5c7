#!/usr/bin/env python3
"""Checks the deployment recipes of deploy/ (docs/deployment.md) as far as this machine
allows, and fails with one line per problem:

- deploy/shmetrics.service: `systemd-analyze verify` says nothing (the ExecStart binary
  replaced by the one just built, which verify requires to exist), and its `serve` command
  line starts and answers /health;
- the engine unit of docs/deployment.md (its ```ini block): `systemd-analyze verify` says
  nothing beside deploy/shmetrics.service (its ExecStart replaced by /bin/true), it is
  ordered after and wants shmetrics.service, and its PROMETHEUS_MULTIPROC_DIR is the
  directory the server serves;
- deploy/Containerfile: multi-stage (a build stage, the binary copied from it), a non-root
  numeric USER, the metrics directory a VOLUME and PROMETHEUS_MULTIPROC_DIR, and its
  CMD starts and answers /health;
- deploy/kubernetes.yaml: valid against the Kubernetes OpenAPI schema (kubernetes-validate,
  strict), and the sidecar pattern holds: an emptyDir with medium Memory mounted at the
  same path in the engine and the server, that path the server's --dir and the engine's
  PROMETHEUS_MULTIPROC_DIR, one non-root user for the pod, scrape annotations and a
  PodMonitor naming the server's port.

Usage: ci/deploy-check.py SHMETRICS_BINARY   (run with the venv that has
kubernetes-validate and PyYAML)
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
problems = []


def problem(text):
    problems.append(text)
    print(f"deploy-check: {text}", file=sys.stderr)


def serves(binary, args, what):
    """Runs `binary ARGS` (its --dir and --listen replaced) and checks /health answers."""
    args = list(args)
    with tempfile.TemporaryDirectory() as tmp:
        for flag, value in (("--dir", tmp), ("--listen", "127.0.0.1:0")):
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        proc = subprocess.Popen([binary] + args, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stderr.readline()
            match = re.match(r"serving http://(\S+)/metrics", line)
            if not match:
                problem(f"{what}: `{shlex.join(args)}` did not start: {line.strip()}")
                return
            with urllib.request.urlopen(f"http://{match.group(1)}/health", timeout=10) as r:
                health = json.load(r)
            if health.get("status") != "ok":
                problem(f"{what}: /health says {health}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def check_unit(binary):
    path = os.path.join(ROOT, "deploy/shmetrics.service")
    text = open(path).read()
    exec_start = re.search(r"^ExecStart=(\S+)(.*)$", text, re.M)
    if not exec_start:
        return problem("shmetrics.service: no ExecStart")
    with tempfile.TemporaryDirectory() as tmp:
        unit = os.path.join(tmp, "shmetrics.service")
        with open(unit, "w") as f:
            f.write(text.replace(exec_start.group(1), os.path.abspath(binary), 1))
        out = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True)
        said = (out.stdout + out.stderr).strip()
        if out.returncode != 0 or said:
            problem(f"shmetrics.service: systemd-analyze verify: {said or out.returncode}")
    args = shlex.split(exec_start.group(2))
    if args[:1] != ["serve"] or args[args.index("--dir") + 1] != "/run/shmetrics":
        problem(f"shmetrics.service: ExecStart does not serve /run/shmetrics: {args}")
    for key in ("RuntimeDirectory=shmetrics", "RuntimeDirectoryPreserve=yes", "User="):
        if key not in text:
            problem(f"shmetrics.service: no {key}")
    serves(binary, args, "shmetrics.service")


def check_engine_unit(binary):
    doc = open(os.path.join(ROOT, "docs/deployment.md")).read()
    blocks = re.findall(r"^```ini\n(.*?)^```", doc, re.S | re.M)
    if len(blocks) != 1:
        return problem(f"deployment.md: {len(blocks)} ini blocks, expected the engine unit")
    text = blocks[0]
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.M)
    if not exec_start:
        return problem("deployment.md engine unit: no ExecStart")
    server = open(os.path.join(ROOT, "deploy/shmetrics.service")).read()
    server_exec = re.search(r"^ExecStart=(\S+)", server, re.M)
    with tempfile.TemporaryDirectory() as tmp:
        engine = os.path.join(tmp, "vllm-engine.service")
        with open(engine, "w") as f:
            f.write(text.replace(exec_start.group(1), "/bin/true", 1))
        with open(os.path.join(tmp, "shmetrics.service"), "w") as f:
            f.write(server.replace(server_exec.group(1), os.path.abspath(binary), 1))
        out = subprocess.run(["systemd-analyze", "verify", engine], capture_output=True, text=True, cwd=tmp,
                             env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{tmp}:"))
        said = (out.stdout + out.stderr).strip()
        if out.returncode != 0 or said:
            problem(f"deployment.md engine unit: systemd-analyze verify: {said or out.returncode}")
    for key in ("After=shmetrics.service", "Wants=shmetrics.service"):
        if key not in text:
            problem(f"deployment.md engine unit: no {key}")
    directory = re.search(r"^Environment=PROMETHEUS_MULTIPROC_DIR=(\S+)$", text, re.M)
    served = shlex.split(re.search(r"^ExecStart=(.*)$", server, re.M).group(1))
    if not directory or served[served.index("--dir") + 1] != directory.group(1):
        problem("deployment.md engine unit: PROMETHEUS_MULTIPROC_DIR is not the directory shmetrics.service serves")


def check_containerfile(binary):
    lines = []
    for line in open(os.path.join(ROOT, "deploy/Containerfile")).read().replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    stages = [l for l in lines if l.startswith("FROM ")]
    if len(stages) < 2 or not re.match(r"FROM \S+ AS build$", stages[0]):
        problem(f"Containerfile: not a multi-stage build: {stages}")
    if not any(l.startswith("COPY --from=build ") for l in lines):
        problem("Containerfile: the run stage does not copy the binary from the build stage")
    last = max(i for i, l in enumerate(lines) if l.startswith("FROM "))
    run_stage = lines[last:]
    users = [l.split()[1] for l in run_stage if l.startswith("USER ")]
    if not users or not re.match(r"[1-9][0-9]*(:[0-9]+)?$", users[-1]):
        problem(f"Containerfile: the run stage's USER is not a non-root uid: {users}")
    volume = [l for l in run_stage if l.startswith("VOLUME ")]
    env = [l for l in run_stage if l.startswith("ENV PROMETHEUS_MULTIPROC_DIR=")]
    cmd = [l for l in run_stage if l.startswith("CMD ")]
    if not (volume and env and cmd):
        return problem("Containerfile: no VOLUME, PROMETHEUS_MULTIPROC_DIR or CMD in the run stage")
    directory = env[0].split("=", 1)[1]
    args = json.loads(cmd[0][4:])
    if json.loads(volume[0][7:]) != [directory] or args[args.index("--dir") + 1] != directory:
        problem(f"Containerfile: VOLUME, ENV and CMD name different directories")
    serves(binary, args, "Containerfile CMD")


def check_kubernetes():
    path = os.path.join(ROOT, "deploy/kubernetes.yaml")
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "kubernetes-validate"), "--strict", path],
        capture_output=True, text=True,
    )
    for line in (out.stdout + out.stderr).splitlines():
        # The PodMonitor is a custom resource: no schema in the Kubernetes API's.
        if line.startswith("INFO") or "Couldn't find schema for kind PodMonitor" in line:
            continue
        problem(f"kubernetes.yaml: {line}")
    if out.returncode != 0:
        problem(f"kubernetes.yaml: kubernetes-validate exited {out.returncode}")
    docs = {d["kind"]: d for d in yaml.safe_load_all(open(path)) if d}
    pod = docs["Deployment"]["spec"]["template"]
    spec = pod["spec"]
    memory = [v["name"] for v in spec["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    if len(memory) != 1:
        return problem("kubernetes.yaml: no emptyDir volume with medium: Memory")
    containers = {c["name"]: c for c in spec["containers"]}
    servers = [c for c in containers.values() if c.get("args", [])[:1] == ["serve"]]
    if len(servers) != 1 or len(containers) < 2:
        return problem("kubernetes.yaml: not an engine beside one `serve` sidecar")
    server = servers[0]
    directory = server["args"][server["args"].index("--dir") + 1]
    for c in containers.values():
        mounts = [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] == memory[0]]
        if mounts != [directory]:
            problem(f"kubernetes.yaml: {c['name']} does not mount the metrics volume at {directory}")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if c is not server and env.get("PROMETHEUS_MULTIPROC_DIR") != directory:
            problem(f"kubernetes.yaml: {c['name']}'s PROMETHEUS_MULTIPROC_DIR is not {directory}")
        if "runAsUser" in c.get("securityContext", {}):
            problem(f"kubernetes.yaml: {c['name']} runs as its own user, not the pod's")
    context = spec.get("securityContext", {})
    if not context.get("runAsNonRoot") or not context.get("runAsUser"):
        problem("kubernetes.yaml: the pod does not run as one non-root user")
    port = pod["metadata"]["annotations"].get("prometheus.io/port")
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    if str(ports.get("metrics")) != port or pod["metadata"]["annotations"].get("prometheus.io/scrape") != "true":
        problem("kubernetes.yaml: the scrape annotations do not name the server's port")
    endpoints = docs["PodMonitor"]["spec"]["podMetricsEndpoints"]
    if [e["port"] for e in endpoints] != ["metrics"]:
        problem("kubernetes.yaml: the PodMonitor does not scrape the server's port")
    serves_args = server["args"]
    return serves_args


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    if shutil.which("systemd-analyze") is None:
        problem("systemd-analyze not found (Debian package systemd)")
    else:
        check_unit(binary)
        check_engine_unit(binary)
    check_containerfile(binary)
    args = check_kubernetes()
    if args:
        serves(binary, args, "kubernetes.yaml sidecar")
    if problems:
        sys.exit(1)
    print("deploy-check: systemd units, Containerfile and Kubernetes manifest pass")


if __name__ == "__main__":
    main()
