//! Compiles `proto/` with protox (no system protoc) into tonic/prost code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let files = [
        "workload.proto",
        "signet/authz/v1/authz.proto",
        "signet/agent/v1/agent.proto",
        "signet/admin/v1/admin.proto",
        "csi/v1/csi.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    let descriptors = protox::compile(files, [root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
