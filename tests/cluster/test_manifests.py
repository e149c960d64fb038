"""docker/: what can be checked without a Docker engine or a Kubernetes cluster."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from tuner.run import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def readme_install() -> str:
    lines = (REPO / "README.md").read_text().splitlines()
    found = [line.split("#")[0].strip() for line in lines if line.startswith("pip install ")]
    assert found, "README.md has no `pip install` line"
    return found[0]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            rows.append((instruction.upper(), rest.strip()))
    return rows


def test_dockerfile_installs_the_readme_way_as_a_non_root_user():
    rows = dockerfile()
    assert rows[0][0] == "FROM" and "nvidia/cuda" in rows[0][1]
    runs = [args for instruction, args in rows if instruction == "RUN"]
    install = readme_install()
    assert any(shlex.split(args) == shlex.split(install) for args in runs), install
    users = [args for instruction, args in rows if instruction == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    # The project is installed after switching to that user, and copied owned by it.
    order = [i for i, (instruction, args) in enumerate(rows) if instruction in ("USER", "RUN")]
    user_at = max(i for i, (instruction, _) in enumerate(rows) if instruction == "USER")
    install_at = next(i for i in order if shlex.split(rows[i][1]) == shlex.split(install))
    assert user_at < install_at
    copies = [args for instruction, args in rows if instruction == "COPY"]
    assert copies and all(f"--chown={users[-1]}" in c for c in copies)


def test_compose_publishes_only_on_loopback():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"mlflow", "ray-head", "ray-worker"} <= set(services)
    published = {}
    for name, service in services.items():
        assert set(service["networks"]) == {"vla-tune"}, name
        for port in service.get("ports", []):
            host_ip, host_port, container_port = str(port).split(":")
            assert host_ip == "127.0.0.1", (name, port)
            published[int(container_port)] = name
    assert published == {5000: "mlflow", 8265: "ray-head"}
    assert "vla-tune" in compose["networks"]

    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=sqlite:////mlflow/" in mlflow  # a database, on a volume
    assert "--artifacts-destination=/mlflow/artifacts" in mlflow
    assert "mlflow:/mlflow" in services["mlflow"]["volumes"]
    assert {"mlflow", "shared"} <= set(compose["volumes"])
    gpu = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    head = services["ray-head"]["command"]
    assert "--head" in head and "--address=ray-head:6379" in services["ray-worker"]["command"]
    for name in ("ray-head", "ray-worker"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" in env


def test_rayjob_entrypoint_parses_with_the_real_cli():
    job = yaml.safe_load((DOCKER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "tuner.run"]
    args = build_parser().parse_args(argv[3:])  # exits (SystemExit) on a bad option
    assert args.space == "grid_robovlms"
    assert args.shared_storage and args.storage_path.startswith("/shared/")
    assert args.mlflow_uri.startswith("http")

    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"]
    assert {".git", "data", "checkpoints", "mlruns", "ray_results"} <= set(runtime_env["excludes"])
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [group["template"]["spec"] for group in cluster["workerGroupSpecs"]]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert "/shared" in mounts  # the same --storage-path on every node
    limits = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]
    assert limits["limits"]["nvidia.com/gpu"] == 1


def test_cluster_doc_submit_command_parses():
    """The `ray job submit` lines of the README's cluster section run the real CLI."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    submits = [line for line in joined.splitlines() if line.strip().startswith("ray job submit")]
    assert submits
    for line in submits:
        argv = shlex.split(line.split("#")[0])
        tail = argv[argv.index("--") + 1 :]
        assert tail[:3] == ["python", "-m", "tuner.run"]
        build_parser().parse_args(tail[3:])
        assert "--runtime-env-json" in argv
