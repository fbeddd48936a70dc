// A SPIFFE Workload API client on grpc-js (Node.js's gRPC, an independent HTTP/2 stack).
//
// Usage: node grpc_js_client.js <socket path> <audience> <mode>   (modes as grpcio_client.py)
// Prints one JSON object with what each call returned, for the Rust test to judge. The proto is
// the repository's proto/workload.proto, loaded at run time with @grpc/proto-loader.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [socketPath, audience, mode] = process.argv.slice(2);
const definition = protoLoader.loadSync(path.join(process.env.SIGNET_PROTO_DIR, "workload.proto"), {
  keepCase: true,
  longs: String,
  defaults: true,
});
const { SpiffeWorkloadAPI } = grpc.loadPackageDefinition(definition);
const client = new SpiffeWorkloadAPI(`unix:${socketPath}`, grpc.credentials.createInsecure());
const withHeader = () => {
  const metadata = new grpc.Metadata();
  metadata.set("workload.spiffe.io", "true");
  return metadata;
};
const deadline = () => ({ deadline: Date.now() + 10_000 });

// google.protobuf.Value as proto-loader decodes it (field names as in the .proto, camelCase
// for the well-known types), to plain JSON.
function structToJson(value) {
  const get = (a, b) => (value[a] !== undefined && value[a] !== null ? value[a] : value[b]);
  const list = get("list_value", "listValue");
  const object = get("struct_value", "structValue");
  if (list) return (list.values || []).map(structToJson);
  if (object) return Object.fromEntries(Object.entries(object.fields || {}).map(([k, v]) => [k, structToJson(v)]));
  const kind = value.kind;
  if (kind && value[kind] !== undefined) return value[kind];
  for (const key of ["string_value", "stringValue", "number_value", "numberValue", "bool_value", "boolValue"]) {
    if (value[key] !== undefined && value[key] !== null && value[key] !== "") return value[key];
  }
  return null;
}

const codeName = (code) => Object.keys(grpc.status).find((name) => grpc.status[name] === code);

function firstOfStream(method, request, metadata) {
  return new Promise((resolve, reject) => {
    const call = client[method](request, metadata, deadline());
    call.on("data", (message) => {
      resolve(message);
      call.cancel();
    });
    call.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
  });
}

function unary(method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, deadline(), (error, response) => (error ? reject(error) : resolve(response)));
  });
}

async function codeOf(promise) {
  try {
    await promise;
    return "OK";
  } catch (error) {
    return codeName(error.code);
  }
}

async function main() {
  const result = { client: `grpc-js ${require("@grpc/grpc-js/package.json").version}` };
  if (mode === "unregistered") {
    result.fetch_x509_svid = await codeOf(firstOfStream("FetchX509SVID", {}, withHeader()));
    result.fetch_jwt_svid = await codeOf(unary("FetchJWTSVID", { audience: [audience] }, withHeader()));
    console.log(JSON.stringify(result));
    return;
  }
  const x509 = await firstOfStream("FetchX509SVID", {}, withHeader());
  const svid = x509.svids[0];
  result.x509 = {
    spiffe_id: svid.spiffe_id,
    cert_chain_der: Buffer.from(svid.x509_svid).toString("base64"),
    key_der_len: svid.x509_svid_key.length,
    bundle_der: Buffer.from(svid.bundle).toString("base64"),
  };
  const bundles = await firstOfStream("FetchX509Bundles", {}, withHeader());
  result.x509_bundles = Object.keys(bundles.bundles).sort();
  const jwtBundles = await firstOfStream("FetchJWTBundles", {}, withHeader());
  result.jwt_bundles = Object.fromEntries(
    Object.entries(jwtBundles.bundles).map(([td, jwks]) => [td, JSON.parse(Buffer.from(jwks).toString()).keys.length > 0]),
  );
  const jwt = await unary("FetchJWTSVID", { audience: [audience] }, withHeader());
  const token = jwt.svids[0].svid;
  result.jwt = { spiffe_id: jwt.svids[0].spiffe_id, token };
  const validated = await unary("ValidateJWTSVID", { audience, svid: token }, withHeader());
  result.validated = {
    spiffe_id: validated.spiffe_id,
    claims: structToJson({ structValue: validated.claims }),
  };
  result.validate_wrong_audience = await codeOf(
    unary("ValidateJWTSVID", { audience: "someone-else", svid: token }, withHeader()),
  );
  result.no_header = await codeOf(firstOfStream("FetchX509SVID", {}, new grpc.Metadata()));
  result.no_header_unary = await codeOf(unary("FetchJWTSVID", { audience: [audience] }, new grpc.Metadata()));
  const unknown = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure());
  result.unknown_method = await codeOf(
    new Promise((resolve, reject) =>
      unknown.makeUnaryRequest(
        "/SpiffeWorkloadAPI/NoSuchMethod",
        (x) => x,
        (x) => x,
        Buffer.alloc(0),
        withHeader(),
        deadline(),
        (error, response) => (error ? reject(error) : resolve(response)),
      ),
    ),
  );
  console.log(JSON.stringify(result));
}

main()
  .then(() => process.exit(0))
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });
