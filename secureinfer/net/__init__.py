"""What the SDK and the node daemon share to speak to each other; this package imports neither.

  certs.py       the network CA and member identities (mutual TLS, roles in certificates)
  membership.py  signed node records, the gossip table and committee views
  owners.py      owners' signatures over the models they publish (OWNER/NAME ids)
  crl.py         the CA's revocation list as members read it (verified, followed only forwards)
  frames.py      engine messages split into protobuf frames and reassembled (no pickle)
  transport.py   the engine's Channel over gRPC streams (Link, GrpcChannel)
  options.py     gRPC message caps and keepalive for every connection
  errors.py      domain errors with the gRPC status their caller gets
  wire.py        a model's public architecture as JSON
  perfwire.py    performance records on the wire, and the checks made of every row received
"""
