"""docker/: what can be checked without a Docker engine or a Kubernetes cluster."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from tuner.run import build_parser

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(is an exception, regex) per line of .dockerignore, with Docker's semantics:
    relative to the context root, leading/trailing slashes dropped, `*` and `?` within one
    path segment, `**` across any number of segments (`**/` also matches none)."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        assert "[" not in pattern and "\\" not in pattern, f"matcher here lacks {pattern}"
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            else:
                regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        rules.append((negated, re.compile(regex)))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Excluded when the last rule matching the path or one of its parent folders (a
    matched folder is not sent at all) is not an exception."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


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


def test_dockerignore_keeps_outputs_data_and_secrets_out_of_the_image():
    # The build context is the repository root, where .dockerignore must be.
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    build = compose["services"]["mlflow"]["build"]
    assert (DOCKER / build["context"]).resolve() == REPO
    copies = [args.split()[-2:] for instruction, args in dockerfile() if instruction == "COPY"]
    assert [".", "/home/ray/vla-tune"] in copies
    rules = dockerignore_rules()
    leaks = [
        ".git/HEAD",
        ".git/objects/ab/cdef",
        "mlruns/mlflow.db",
        "mlruns/artifacts/1/abc/artifacts/results.csv",
        "ray_results/grid-robovlms-20250101-120000/best.json",
        "ray_results/s/lr=1e-4/checkpoint_000002/training_state.pt",
        "exported/grid-robovlms/adapter/adapter_model.safetensors",
        "evaluation/grid-robovlms/summary.json",
        "checkpoints/best/head.safetensors",
        "runs/old/checkpoint_000001/adapter/adapter_config.json",
        "weights.pt",
        "data/episode_20251114_101500_1box_vert_left.h5",
        "demo_episodes/episode_20250101_000000_1box_hori_left.h5",
        "elsewhere/episodes/episode_1.h5",
        "models/kosmos-2-patch14-224/config.json",
        ".cache/vla-tune/decoded/ab/ab12_224x224_v1.npy",
        "tuner/__pycache__/run.cpython-311.pyc",
        "vla_tune.egg-info/PKG-INFO",
        ".pytest_cache/v/cache/lastfailed",
        ".venv/bin/python",
        "docker/auth_token",
        "auth_token",
        ".ray/auth_token",
        "secrets/cluster.token",
        ".env",
        "docker/.env",
        ".env.local",
        "docker/tls/server.key",
    ]
    assert [p for p in leaks if not dockerignored(p, rules)] == []
    # Everything the install and the image need is still sent.
    source = ["tuner/run.py", "pyproject.toml", "README.md", "docker/Dockerfile", ".ci/run"]
    source += [p.relative_to(REPO).as_posix() for p in REPO.glob("tuner/**/*.py")]
    source += [p.relative_to(REPO).as_posix() for p in REPO.glob("trainables/**/*.py")]
    source += [p.relative_to(REPO).as_posix() for p in REPO.glob("search_spaces/*.yaml")]
    source += [p.relative_to(REPO).as_posix() for p in REPO.glob("tests/**/*.py")]
    assert "trainables/mobile_vla/decode_cache.py" in source
    assert [p for p in source if dockerignored(p, rules)] == []
