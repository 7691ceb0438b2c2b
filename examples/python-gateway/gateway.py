#!/usr/bin/env python3
"""A gateway in Python: signs its request with its TLS client key and calls
Sign on a tss-node.

Every party of the cluster checks the client's own signature over the
request (docs/FORMATS.md, "Client request authorisation"), so a gateway
signs each request it sends, whatever node it calls. This script:

1. generates the gRPC stubs from proto/proto/tss.proto (grpcio-tools);
2. connects over mutual TLS with the client's certificate, pinning the
   node's certificate, with the TLS server name set to the party's name
   (the name in the node's certificate);
3. builds the canonical encoding of the request, signs it with the client's
   ECDSA P-256 key (SHA-256, DER), and calls Sign for a Bitcoin signed
   message (the node hashes it itself);
4. checks the returned signature itself (secp256k1 ECDSA over the digest it
   computes itself) and prints one JSON line.

    python3 -m pip install -r examples/python-gateway/requirements.txt
    python3 examples/python-gateway/gateway.py --node 127.0.0.1:7001 \\
        --node-cert DIR/custodian-a/tls.crt --party custodian-a \\
        --client DIR/gateway --key demo-key --message "hello"
"""

import argparse
import hashlib
import importlib
import json
import os
import secrets
import struct
import sys
import tempfile
import time

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

DOMAIN = b"tss/client-request/v1"
OP_SIGN = 1
# HashAlgorithm BITCOIN_MESSAGE: the node signs the Bitcoin signed-message
# hash of the text (a domain-separated message, what role `signer` allows).
HASH_BITCOIN_MESSAGE = 6
VALIDITY_SECS = 300


def lp16(b: bytes) -> bytes:
    """A 2-byte big-endian length, then the bytes."""
    if len(b) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    return struct.pack(">H", len(b)) + b


def compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def bitcoin_message_digest(message: bytes) -> bytes:
    """Double SHA-256 of the Bitcoin signed-message preimage."""
    pre = b"\x18Bitcoin Signed Message:\n" + compact_size(len(message)) + message
    return hashlib.sha256(hashlib.sha256(pre).digest()).digest()


def signed_bytes(op: int, key_id: str, request_id: bytes, payload: bytes,
                 hash_value: int, chain: str, expires_unix: int) -> bytes:
    """The canonical encoding a client signs (docs/FORMATS.md)."""
    return (DOMAIN + b"\x00" + bytes([op]) + lp16(key_id.encode()) +
            lp16(request_id) + hashlib.sha256(payload).digest() +
            struct.pack(">I", hash_value) + lp16(chain.encode()) +
            struct.pack(">Q", expires_unix))


def load_stubs():
    """Generates and imports the Python stubs of the node's API."""
    from grpc_tools import protoc  # noqa: import here: only needed once
    here = os.path.dirname(os.path.abspath(__file__))
    proto_dir = os.path.join(here, "..", "..", "proto", "proto")
    out = tempfile.mkdtemp(prefix="tss-stubs-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}",
                      f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(proto_dir, "tss.proto")])
    if rc != 0:
        sys.exit(f"cannot generate the stubs from {proto_dir}/tss.proto")
    sys.path.insert(0, out)
    return importlib.import_module("tss_pb2"), importlib.import_module("tss_pb2_grpc")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--node", required=True, help="host:port of the node's API")
    ap.add_argument("--node-cert", required=True, help="the node's tls.crt (pinned)")
    ap.add_argument("--party", required=True,
                    help="the node's party name: the TLS server name")
    ap.add_argument("--client", required=True,
                    help="folder with client.crt and client.key")
    ap.add_argument("--key", required=True, help="key id")
    ap.add_argument("--message", required=True,
                    help="text to sign (as a Bitcoin signed message)")
    args = ap.parse_args()

    pb, rpc = load_stubs()
    read = lambda p: open(p, "rb").read()
    node_cert = read(args.node_cert)
    cert_pem = read(os.path.join(args.client, "client.crt"))
    key_pem = read(os.path.join(args.client, "client.key"))
    cert_der = x509.load_pem_x509_certificate(cert_pem).public_bytes(
        serialization.Encoding.DER)
    key = serialization.load_pem_private_key(key_pem, password=None)

    message = args.message.encode()
    request_id = secrets.token_bytes(16)
    expires = int(time.time()) + VALIDITY_SECS
    to_sign = signed_bytes(OP_SIGN, args.key, request_id, message,
                           HASH_BITCOIN_MESSAGE, "", expires)
    auth = pb.ClientAuthorization(
        client_cert_sha256=hashlib.sha256(cert_der).digest(),
        expires_unix=expires,
        signature=key.sign(to_sign, ec.ECDSA(hashes.SHA256())),
    )
    request = pb.SignRequest(key_id=args.key, message=message,
                             hash=pb.HASH_ALGORITHM_BITCOIN_MESSAGE,
                             request_id=request_id, authorization=auth)

    creds = grpc.ssl_channel_credentials(root_certificates=node_cert,
                                         private_key=key_pem,
                                         certificate_chain=cert_pem)
    options = [("grpc.ssl_target_name_override", args.party)]
    with grpc.secure_channel(args.node, creds, options=options) as channel:
        try:
            resp = rpc.SignerStub(channel).Sign(request, timeout=120)
        except grpc.RpcError as e:
            print(f"Sign failed: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1

    digest = bitcoin_message_digest(message)
    if resp.digest != digest:
        print("the node signed another digest than the message's",
              file=sys.stderr)
        return 1
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(),
                                                          resp.public_key)
    try:
        public.verify(resp.der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        print("the signature does not verify", file=sys.stderr)
        return 1
    print(json.dumps({
        "public_key": resp.public_key.hex(),
        "digest": digest.hex(),
        "der": resp.der.hex(),
        "signers": list(resp.signers),
        "path": resp.path,
        "verified": True,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
