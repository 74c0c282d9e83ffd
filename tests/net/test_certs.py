"""The network CA, member identities, certificate and signature checks, and mutual TLS over real gRPC."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import stat
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from secureinfer.net.certs import (NODE_SAN, CertError, Identity, create_ca, describe, issue, operator_of,
                                   peer_from_context, verify_certificate, verify_signature)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a node (node-a), a client (alice) and an owner (olivia)."""
    directory = tmp_path_factory.mktemp("network")
    create_ca(directory)
    issue(directory, "node-a", "node", hosts=("127.0.0.1", "localhost", "node-a.example.org"), operator="acme")
    issue(directory, "alice", "client")
    issue(directory, "olivia", "owner")
    return directory


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A different CA that issued certificates with the same names as the real network's."""
    directory = tmp_path_factory.mktemp("rogue")
    create_ca(directory, common_name="secureinfer network CA")
    issue(directory, "node-a", "node", operator="acme")
    issue(directory, "alice", "client")
    return directory


def _cert(directory: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / f"{name}.pem").read_bytes())


def test_round_trip_and_files(network: Path) -> None:
    node = Identity.load(network, "node-a")
    assert (node.name, node.role) == ("node-a", "node")
    assert node.ca_pem == (network / "ca.pem").read_bytes()
    assert Identity.load(network, "alice").role == "client"
    assert Identity.load(network, "olivia").role == "owner"
    for key in ("ca.key", "node-a.key", "alice.key"):
        assert stat.S_IMODE(os.stat(network / key).st_mode) == 0o600
    peer = verify_certificate(node.cert_pem, node.ca_pem)
    assert (peer.name, peer.role, peer.fingerprint) == ("node-a", "node", node.fingerprint)
    assert len(node.fingerprint) == 64 and node.fingerprint != Identity.load(network, "alice").fingerprint
    assert node.channel_options("node-a") == [("grpc.ssl_target_name_override", "node-a")]


def test_certificate_contents(network: Path) -> None:
    cert = _cert(network, "node-a")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-a"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "node"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node-a", NODE_SAN, "localhost", "node-a.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ca = _cert(network, "ca")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    create_ca(tmp_path)
    first = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(CertError, match="already exists"):
        create_ca(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == first
    create_ca(tmp_path, force=True)
    assert (tmp_path / "ca.pem").read_bytes() != first
    issue(tmp_path, "n1", "node", operator="acme")
    with pytest.raises(CertError, match="already exists"):
        issue(tmp_path, "n1", "node", operator="acme")


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [("node a", "node", "invalid name"), ("-x", "node", "invalid name"), ("x" * 64, "node", "invalid name"),
     ("ca", "node", "reserved"), ("n2", "admin", "invalid role")],
)
def test_issue_validates(tmp_path: Path, name: str, role: str, message: str) -> None:
    create_ca(tmp_path)
    with pytest.raises(CertError, match=message):
        issue(tmp_path, name, role)


def test_issue_without_ca(tmp_path: Path) -> None:
    with pytest.raises(CertError, match="CA certificate not found"):
        issue(tmp_path, "n1", "node", operator="acme")


def test_load_missing_files(network: Path) -> None:
    with pytest.raises(CertError, match="not found"):
        Identity.load(network, "nobody")


def test_other_ca_rejected(network: Path, rogue: Path, tmp_path: Path) -> None:
    rogue_pem = (rogue / "node-a.pem").read_bytes()
    with pytest.raises(CertError, match="not issued by this network's CA"):
        verify_certificate(rogue_pem, (network / "ca.pem").read_bytes())
    mixed = tmp_path
    (mixed / "ca.pem").write_bytes((network / "ca.pem").read_bytes())
    (mixed / "node-a.pem").write_bytes(rogue_pem)
    (mixed / "node-a.key").write_bytes((rogue / "node-a.key").read_bytes())
    with pytest.raises(CertError, match="not issued by this network's CA"):
        Identity.load(mixed, "node-a")


def test_common_name_mismatch_rejected(network: Path, tmp_path: Path) -> None:
    for suffix in ("pem", "key"):
        (tmp_path / f"mallory.{suffix}").write_bytes((network / f"alice.{suffix}").read_bytes())
    (tmp_path / "ca.pem").write_bytes((network / "ca.pem").read_bytes())
    with pytest.raises(CertError, match="names 'alice', not 'mallory'"):
        Identity.load(tmp_path, "mallory")


def test_key_must_match_certificate(network: Path, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes((network / "ca.pem").read_bytes())
    (tmp_path / "alice.pem").write_bytes((network / "alice.pem").read_bytes())
    (tmp_path / "alice.key").write_bytes((network / "olivia.key").read_bytes())
    with pytest.raises(CertError, match="does not belong"):
        Identity.load(tmp_path, "alice")


def test_validity_window(tmp_path: Path) -> None:
    create_ca(tmp_path)
    issue(tmp_path, "old", "node", operator="acme", days=1, not_before=time.time() - 3 * 86400)
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    old_pem = (tmp_path / "old.pem").read_bytes()
    with pytest.raises(CertError, match="expired"):
        verify_certificate(old_pem, ca_pem)
    with pytest.raises(CertError, match="expired"):
        Identity.load(tmp_path, "old")
    assert verify_certificate(old_pem, ca_pem, now=time.time() - 2.5 * 86400).name == "old"
    issue(tmp_path, "future", "node", operator="acme", not_before=time.time() + 86400)
    with pytest.raises(CertError, match="not valid before"):
        verify_certificate((tmp_path / "future.pem").read_bytes(), ca_pem)


def test_ca_certificate_is_not_a_member(network: Path) -> None:
    ca_pem = (network / "ca.pem").read_bytes()
    with pytest.raises(CertError, match="CA certificate cannot identify"):
        verify_certificate(ca_pem, ca_pem)


def test_sign_and_verify(network: Path) -> None:
    node = Identity.load(network, "node-a")
    signature = node.sign(b"hello")
    verify_signature(node.cert_pem, b"hello", signature)
    with pytest.raises(CertError, match="bad signature"):
        verify_signature(node.cert_pem, b"hellO", signature)
    with pytest.raises(CertError, match="bad signature"):
        verify_signature(Identity.load(network, "alice").cert_pem, b"hello", signature)


# ------------------------------------------------------------------------------------------------ mTLS over gRPC


async def _whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """Answer 'name role' of the caller's certificate."""
    try:
        peer = peer_from_context(context)
    except CertError as exc:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
    return f"{peer.name} {peer.role}".encode()


async def _call(port: int, credentials: grpc.ChannelCredentials, target_name: str) -> tuple[object, bytes | None]:
    """Health-check the server, then ask who we are; return (status or StatusCode, whoami answer or None)."""
    options = [("grpc.ssl_target_name_override", target_name)]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), None
        who = await channel.unary_unary("/test.Whoami/Who")(b"", timeout=5)
        return reply.status, who


async def _mtls_scenarios(network: Path, rogue: Path) -> dict[str, tuple[object, bytes | None]]:
    node = Identity.load(network, "node-a")
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    whoami = grpc.unary_unary_rpc_method_handler(_whoami)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Whoami", {"Who": whoami})])
    port = server.add_secure_port("127.0.0.1:0", node.server_credentials())
    await server.start()
    try:
        alice = Identity.load(network, "alice")
        olivia = Identity.load(network, "olivia")
        outsider = Identity.load(rogue, "alice")
        anonymous = grpc.ssl_channel_credentials(root_certificates=node.ca_pem)
        return {
            "alice": await _call(port, alice.channel_credentials(), "node-a"),
            "olivia": await _call(port, olivia.channel_credentials(), "node-a"),
            "rogue": await _call(port, outsider.channel_credentials(), "node-a"),
            "anonymous": await _call(port, anonymous, "node-a"),
            "wrong-name": await _call(port, alice.channel_credentials(), "node-b"),
        }
    finally:
        await server.stop(None)


def test_mutual_tls(network: Path, rogue: Path) -> None:
    results = asyncio.run(_mtls_scenarios(network, rogue))
    assert results["alice"] == (health_pb2.HealthCheckResponse.SERVING, b"alice client")
    assert results["olivia"] == (health_pb2.HealthCheckResponse.SERVING, b"olivia owner")
    assert results["rogue"] == (grpc.StatusCode.UNAVAILABLE, None)
    assert results["anonymous"] == (grpc.StatusCode.UNAVAILABLE, None)
    assert results["wrong-name"] == (grpc.StatusCode.UNAVAILABLE, None)


class _FakeContext:
    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_peer_from_context_without_certificate(network: Path) -> None:
    with pytest.raises(CertError, match="did not present a client certificate"):
        peer_from_context(_FakeContext({"transport_security_type": [b"ssl"]}))
    pem = (network / "olivia.pem").read_bytes()
    peer = peer_from_context(_FakeContext({"x509_pem_cert": [pem], "x509_common_name": [b"olivia"]}))
    assert (peer.name, peer.role) == ("olivia", "owner")
    with pytest.raises(CertError, match="disagrees"):
        peer_from_context(_FakeContext({"x509_pem_cert": [pem], "x509_common_name": [b"alice"]}))


# ------------------------------------------------------------------------------------------------ CLI


def _cli(*argv: str) -> int:
    import argparse

    from secureinfer.cli import certs as cli_certs

    parser = argparse.ArgumentParser(prog="secureinfer")
    cli_certs.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "certs")
    assert _cli("certs", "init", "--dir", d) == 0
    assert _cli("certs", "init", "--dir", d) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert _cli("certs", "issue", "--dir", d, "--name", "node-a", "--role", "node", "--operator", "acme", "--host",
                "10.0.0.5") == 0
    assert Identity.load(Path(d), "node-a").role == "node"
    capsys.readouterr()
    assert _cli("certs", "show", "--dir", d, "--name", "node-a") == 0
    out = capsys.readouterr().out
    assert Identity.load(Path(d), "node-a").fingerprint in out and "role:        node" in out and "10.0.0.5" in out
    assert _cli("certs", "issue", "--dir", d, "--name", "bad name", "--role", "client") == 2
    assert "invalid name" in capsys.readouterr().err
    assert _cli("certs", "show", "--dir", d, "--name", "nobody") == 2
    assert _cli("certs") == 2


def test_node_san_is_reserved_and_only_on_node_certificates(tmp_path):
    create_ca(tmp_path)
    with pytest.raises(CertError, match="reserved"):
        issue(tmp_path, NODE_SAN, "client")
    client = x509.load_pem_x509_certificate(issue(tmp_path, "alice", "client").read_bytes())
    names = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert NODE_SAN not in names.get_values_for_type(x509.DNSName)


# ------------------------------------------------------------------------------------------------ operators


def _legacy_node(directory: Path, name: str) -> bytes:
    """A node certificate as the CA issued them before certificates named an operator (CN and OU only)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    start = time.time() - 600
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "node")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.fromtimestamp(start, tz=datetime.timezone.utc))
            .not_valid_after(datetime.datetime.fromtimestamp(start + 86400, tz=datetime.timezone.utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / f"{name}.pem").write_bytes(pem)
    (directory / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    return pem


def test_node_certificates_carry_the_operator_the_ca_names(network: Path) -> None:
    node = Identity.load(network, "node-a")
    assert node.operator == "acme"
    assert verify_certificate(node.cert_pem, node.ca_pem).operator == "acme"
    assert _cert(network, "node-a").subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "acme"
    assert operator_of(node.cert_pem) == "acme"
    assert describe(network, "node-a")["operator"] == "acme"
    for name in ("alice", "olivia"):  # clients and owners run no node
        assert Identity.load(network, name).operator == ""
        assert verify_certificate((network / f"{name}.pem").read_bytes(), node.ca_pem).operator == ""


def test_issue_requires_an_operator_for_nodes_only(tmp_path: Path) -> None:
    create_ca(tmp_path)
    with pytest.raises(CertError, match="needs an operator"):
        issue(tmp_path, "n1", "node")
    with pytest.raises(CertError, match="invalid operator"):
        issue(tmp_path, "n1", "node", operator="two words")
    with pytest.raises(CertError, match="only node certificates name an operator"):
        issue(tmp_path, "alice", "client", operator="acme")
    assert not (tmp_path / "n1.pem").exists() and not (tmp_path / "alice.key").exists()


def test_node_certificate_without_operator_is_refused_with_reissue_advice(tmp_path: Path) -> None:
    create_ca(tmp_path)
    pem = _legacy_node(tmp_path, "old-node")
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(CertError, match="names no operator.*re-issue it: secureinfer certs issue .*--operator"):
        verify_certificate(pem, ca_pem)
    with pytest.raises(CertError, match="names no operator"):
        Identity.load(tmp_path, "old-node")
    with pytest.raises(CertError, match="names no operator"):
        peer_from_context(_FakeContext({"x509_pem_cert": [pem], "x509_common_name": [b"old-node"]}))
    assert operator_of(pem) == ""


def test_cli_issue_and_show_operator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "certs")
    assert _cli("certs", "init", "--dir", d) == 0
    assert "--operator" in capsys.readouterr().out
    assert _cli("certs", "issue", "--dir", d, "--name", "node-b", "--role", "node") == 2
    assert "needs an operator (--operator NAME)" in capsys.readouterr().err
    assert _cli("certs", "issue", "--dir", d, "--name", "node-b", "--role", "node", "--operator", "beta") == 0
    assert "operator: beta" in capsys.readouterr().out
    assert _cli("certs", "show", "--dir", d, "--name", "node-b") == 0
    assert "operator:    beta" in capsys.readouterr().out
    _legacy_node(Path(d), "old-node")
    assert _cli("certs", "show", "--dir", d, "--name", "old-node") == 2
    out = capsys.readouterr().out
    assert "operator:    (none: re-issue" in out and "NOT usable" in out and "names no operator" in out
