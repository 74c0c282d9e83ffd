"""Models bound to their owners: model ids are OWNER/NAME, and every hosted record carries its owner's signature.

An owner publishing a model to a committee (or a plaintext worker) signs a statement made of the hosted record's
fields: the model id, the owner's name, the committee id and its members in party order, the privacy mode, the
architecture, the SHA-256 of the public config JSON, the tokenizer, the fixed point and the weight mode. Nodes carry
the signature and the owner's certificate in the record (`HostedModel.owner_seal`). A node hosts a model only under
its publisher's own namespace, and serves it only while the statement verifies; a client uses a committee only when
every member's record of the model verifies against the network CA with an owner certificate named as the model id's
OWNER (`OwnedTable`). A bare NAME stands for OWNER/NAME when exactly one owner publishes NAME (`OwnedTable.resolve`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence

from secureinfer.mpc.ring import DEFAULT_FRAC_BITS
from secureinfer.v1 import node_pb2

from .certs import NAME_PATTERN, CertError, Identity, verify_certificate, verify_signature
from .membership import CommitteeView, MembershipTable, hosted_frac_bits
from .wire import config_from_json, config_to_json

SEPARATOR = "/"
_PURPOSE = b"secureinfer model statement v1\n"


class OwnerError(ValueError):
    """A model id outside its owner's namespace, or a hosted record whose owner signature does not verify; the
    message says which and why."""


def split_model_id(model_id: str) -> tuple[str, str]:
    """(OWNER, NAME) of a namespaced model id; OwnerError for a bare name or an owner that is no member name."""
    owner, separator, name = model_id.partition(SEPARATOR)
    if not separator or not name or NAME_PATTERN.fullmatch(owner) is None:
        raise OwnerError(f"model id {model_id!r} is not OWNER/NAME (the owner's certificate name, then the name)")
    return owner, name


def qualify(owner: str, model: str) -> str:
    """`model` in `owner`'s namespace: NAME becomes OWNER/NAME; OWNER/NAME stays; another owner's id is OwnerError."""
    if SEPARATOR not in model:
        return f"{owner}{SEPARATOR}{model}"
    named, _ = split_model_id(model)
    if named != owner:
        raise OwnerError(f"model id {model!r} is in the namespace of {named!r}; {owner!r} publishes only under "
                         f"{owner + SEPARATOR!r}")
    return model


def hosted_record(model_id: str, committee_id: str, node_ids: Sequence[str], privacy: int, config_json: str, *,
                  party_index: int = 0, public_weights: bool = False, fractional_bits: int = 0
                  ) -> node_pb2.HostedModel:
    """The record a node makes of a publication (without its seal): what the owner signs before sending and the
    node checks the signature against (BadRequest for a malformed config)."""
    cfg = config_from_json(config_json)
    secret = privacy == node_pb2.PRIVACY_SECRET
    return node_pb2.HostedModel(model_id=model_id, committee_id=committee_id, node_ids=list(node_ids),
                                party_index=party_index, privacy=privacy, arch=cfg.arch,
                                config_json=config_to_json(cfg), public_weights=public_weights,
                                frac_bits=(fractional_bits or DEFAULT_FRAC_BITS) if secret else 0)


def statement(hosted: node_pb2.HostedModel) -> bytes:
    """The bytes an owner signs about `hosted` (module docstring); OwnerError if its id or config is malformed."""
    owner, _ = split_model_id(hosted.model_id)
    try:
        config = json.loads(hosted.config_json)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise OwnerError(f"model {hosted.model_id!r}: its record's config is not a JSON object")
    secret = hosted.privacy == node_pb2.PRIVACY_SECRET
    fields = {"model_id": hosted.model_id, "owner": owner, "committee_id": hosted.committee_id,
              "node_ids": list(hosted.node_ids), "privacy": int(hosted.privacy), "arch": hosted.arch,
              "config_sha256": hashlib.sha256(hosted.config_json.encode()).hexdigest(),
              "tokenizer": str(config.get("tokenizer") or ""), "frac_bits": hosted_frac_bits(hosted) if secret else 0,
              "public_weights": bool(hosted.public_weights)}
    return _PURPOSE + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def seal(identity: Identity, hosted: node_pb2.HostedModel) -> node_pb2.OwnerSeal:
    """`identity`'s signature over `hosted`'s statement (OwnerError unless an owner signs in its own namespace)."""
    if identity.role != "owner":
        raise OwnerError(f"only owner certificates sign models; {identity.name!r} has the role {identity.role!r}")
    owner, _ = split_model_id(hosted.model_id)
    if owner != identity.name:
        raise OwnerError(f"{identity.name!r} cannot sign model {hosted.model_id!r}: it is {owner!r}'s")
    return node_pb2.OwnerSeal(certificate_pem=identity.cert_pem, signature=identity.sign(statement(hosted)))


def verify(hosted: node_pb2.HostedModel, ca_pem: bytes, now: float | None = None,
           revoked: Callable[[bytes], bool] | None = None) -> str:
    """The owner's name when `hosted` carries a valid signature of its statement by the owner certificate the model
    id names, issued by this network's CA and not revoked; else OwnerError saying why."""
    owner, _ = split_model_id(hosted.model_id)
    found = hosted.owner_seal
    if not found.certificate_pem or not found.signature:
        raise OwnerError(f"model {hosted.model_id!r}: the record carries no owner signature")
    try:
        signer = verify_certificate(found.certificate_pem, ca_pem, now)
    except CertError as exc:
        raise OwnerError(f"model {hosted.model_id!r}: signed by a certificate that is not this network's: "
                         f"{exc}") from None
    if signer.role != "owner":
        raise OwnerError(f"model {hosted.model_id!r}: signed by the {signer.role} certificate {signer.name!r}, "
                         f"not an owner's")
    if signer.name != owner:
        raise OwnerError(f"model {hosted.model_id!r}: signed by owner {signer.name!r}, but the id belongs to "
                         f"{owner!r}")
    if revoked is not None and revoked(found.certificate_pem):
        raise OwnerError(f"model {hosted.model_id!r}: its owner's certificate is revoked")
    try:
        verify_signature(found.certificate_pem, statement(hosted), found.signature)
    except CertError:
        raise OwnerError(f"model {hosted.model_id!r}: the owner's signature does not match the record (a field "
                         f"was changed after signing)") from None
    return owner


class OwnedTable(MembershipTable):
    """A membership view that offers a committee for a model only where every member's record of it carries a
    valid signature by the model's owner (`verify`); claims that do not verify are kept aside to explain a refusal."""

    def __init__(self, ca_pem: bytes, self_id: str = "", clock: Callable[[], float] = time.time,
                 revoked: Callable[[bytes], bool] | None = None) -> None:
        super().__init__(ca_pem, self_id, clock, revoked)
        self._verdicts: dict[bytes, str | None] = {}  # a record's bytes -> owner_problem (one check per record)

    def owner_problem(self, hosted: node_pb2.HostedModel) -> str | None:
        """Why `hosted`'s owner signature does not verify here, or None when it does."""
        key = hosted.SerializeToString(deterministic=True)
        if key not in self._verdicts:
            try:
                verify(hosted, self.ca_pem, self.clock(), self.revoked)
                self._verdicts[key] = None
            except OwnerError as exc:
                self._verdicts[key] = str(exc)
        return self._verdicts[key]

    def claims(self, model_id: str) -> list[tuple[str, node_pb2.HostedModel]]:
        """(node id, hosted record) of every live record that lists `model_id`."""
        return [(r.node_id, h) for r in self.live() for h in r.models if h.model_id == model_id]

    def choose_committees(self, model_id: str) -> list[CommitteeView]:
        """MembershipTable.choose_committees, less the committees some member of which holds the model without a
        valid owner signature."""
        good = {(node_id, h.committee_id) for node_id, h in self.claims(model_id) if self.owner_problem(h) is None}
        return [view for view in super().choose_committees(model_id)
                if all((node_id, view.committee_id) in good for node_id in view.node_ids)]

    def refusals(self, model_id: str) -> list[str]:
        """Why each live record's claim to host `model_id` was refused (node id: reason), for an error message."""
        out = []
        for node_id, hosted in self.claims(model_id):
            problem = self.owner_problem(hosted)
            if problem is not None:
                out.append(f"{node_id}: {problem}")
        return sorted(set(out))

    def verified_config(self, model_id: str) -> str | None:
        """The public config JSON of `model_id` from a record whose owner signature verifies, or None."""
        for _, hosted in self.claims(model_id):
            if hosted.config_json and self.owner_problem(hosted) is None:
                return hosted.config_json
        return None

    def owners(self, name: str) -> list[str]:
        """The owners that publish a model called `name` (a bare NAME) under a valid signature, sorted."""
        found = set()
        for record in self.live():
            for hosted in record.models:
                owner, _, rest = hosted.model_id.partition(SEPARATOR)
                if rest == name and self.owner_problem(hosted) is None:
                    found.add(owner)
        return sorted(found)

    def resolve(self, model: str, owner: str | None = None) -> str:
        """The full id a request for `model` names: OWNER/NAME as given (its OWNER must equal a pinned `owner`), a
        bare NAME in the pinned `owner`'s namespace, else in the namespace of the one owner that publishes NAME;
        OwnerError when the pin contradicts the id, or when several owners publish NAME (the message lists them)."""
        if SEPARATOR in model:
            named, _ = split_model_id(model)
            if owner is not None and named != owner:
                raise OwnerError(f"model id {model!r} belongs to {named!r}, but the request pins owner {owner!r}")
            return model
        if owner is not None:
            return f"{owner}{SEPARATOR}{model}"
        owners = self.owners(model)
        if len(owners) > 1:
            raise OwnerError(f"model name {model!r} is published by several owners ({', '.join(owners)}): name one, "
                             f"e.g. {owners[0] + SEPARATOR + model!r}, or pin it with owner=")
        return f"{owners[0]}{SEPARATOR}{model}" if owners else model
