"""A SPIFFE Workload API client on Python's grpcio (gRPC C-core, the transport of py-spiffe).

Usage: grpcio_client.py <socket path> <audience> <mode>
  mode "registered":   fetch X.509 SVIDs, bundles, a JWT-SVID, validate it; hostile calls.
  mode "unregistered": the caller has no entry: every fetch must be PERMISSION_DENIED.
       grpcio_client.py <socket path> <method path> raw
  one unary call with an empty request to any service (the admin and CSI sockets).
Prints one JSON object: what each call returned, for the Rust test to judge. Stubs are generated
from the repository's proto/workload.proto with grpcio-tools at run time. The channel keeps
C-core's default :authority for a unix: target (the percent-encoded socket path).
"""

import base64
import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from google.protobuf import json_format
from grpc_tools import protoc


def stubs(proto_dir):
    out = tempfile.mkdtemp(prefix="signet-grpcio-")
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto_dir}",
            # google/protobuf/*.proto, shipped with grpcio-tools.
            f"-I{os.path.join(os.path.dirname(grpc_tools.__file__), '_proto')}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            os.path.join(proto_dir, "workload.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import workload_pb2  # noqa: E402
    import workload_pb2_grpc  # noqa: E402

    return workload_pb2, workload_pb2_grpc


def code_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


def raw_call(socket_path, method):
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    call = channel.unary_unary(
        method, request_serializer=lambda _: b"", response_deserializer=lambda raw: raw
    )
    try:
        response = call(b"", timeout=10)
        print(json.dumps({"client": f"grpcio {grpc.__version__}", "code": "OK", "len": len(response)}))
    except grpc.RpcError as error:
        print(json.dumps({"code": error.code().name, "details": error.details()}))


def main():
    socket_path, audience, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "raw":
        raw_call(socket_path, audience)
        return
    proto_dir = os.environ["SIGNET_PROTO_DIR"]
    pb, pb_grpc = stubs(proto_dir)
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    api = pb_grpc.SpiffeWorkloadAPIStub(channel)
    header = [("workload.spiffe.io", "true")]
    result = {"client": f"grpcio {grpc.__version__}"}

    if mode == "unregistered":
        result["fetch_x509_svid"] = code_of(
            lambda: next(api.FetchX509SVID(pb.X509SVIDRequest(), metadata=header, timeout=10))
        )
        result["fetch_jwt_svid"] = code_of(
            lambda: api.FetchJWTSVID(pb.JWTSVIDRequest(audience=[audience]), metadata=header, timeout=10)
        )
        print(json.dumps(result))
        return

    x509 = next(api.FetchX509SVID(pb.X509SVIDRequest(), metadata=header, timeout=10))
    svid = x509.svids[0]
    result["x509"] = {
        "spiffe_id": svid.spiffe_id,
        "cert_chain_der": base64.b64encode(svid.x509_svid).decode(),
        "key_der_len": len(svid.x509_svid_key),
        "bundle_der": base64.b64encode(svid.bundle).decode(),
    }
    bundles = next(api.FetchX509Bundles(pb.X509BundlesRequest(), metadata=header, timeout=10))
    result["x509_bundles"] = sorted(bundles.bundles.keys())
    jwt_bundles = next(api.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=header, timeout=10))
    result["jwt_bundles"] = {
        td: json.loads(jwks.decode()).get("keys", []) != [] for td, jwks in jwt_bundles.bundles.items()
    }
    jwt = api.FetchJWTSVID(pb.JWTSVIDRequest(audience=[audience]), metadata=header, timeout=10)
    token = jwt.svids[0].svid
    result["jwt"] = {"spiffe_id": jwt.svids[0].spiffe_id, "token": token}
    validated = api.ValidateJWTSVID(
        pb.ValidateJWTSVIDRequest(audience=audience, svid=token), metadata=header, timeout=10
    )
    result["validated"] = {
        "spiffe_id": validated.spiffe_id,
        "claims": json_format.MessageToDict(validated.claims),
    }
    result["validate_wrong_audience"] = code_of(
        lambda: api.ValidateJWTSVID(
            pb.ValidateJWTSVIDRequest(audience="someone-else", svid=token), metadata=header, timeout=10
        )
    )
    # Hostile: no security header; a method the server does not have.
    result["no_header"] = code_of(lambda: next(api.FetchX509SVID(pb.X509SVIDRequest(), timeout=10)))
    result["no_header_unary"] = code_of(
        lambda: api.FetchJWTSVID(pb.JWTSVIDRequest(audience=[audience]), timeout=10)
    )
    unknown = channel.unary_unary(
        "/SpiffeWorkloadAPI/NoSuchMethod",
        request_serializer=lambda _: b"",
        response_deserializer=lambda raw: raw,
    )
    result["unknown_method"] = code_of(lambda: unknown(b"", metadata=header, timeout=10))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
