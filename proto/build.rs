//! Compiles the .proto files with `protox` (pure Rust, no system `protoc`)
//! and generates prost messages plus tonic clients and servers.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let files = [
        "etcd/kv.proto",
        "etcd/auth.proto",
        "etcd/rpc.proto",
        "etcd/lease.proto",
        "etcd/raft_internal.proto",
        "etcd/raftpb.proto",
        "etcd/walpb.proto",
        "cairn/internal.proto",
        "cairn/peer.proto",
    ];

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", root.join("etcd").display());
    println!("cargo:rerun-if-changed={}", root.join("cairn").display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }

    let fds = protox::compile(files.iter().map(|f| root.join(f)), [&root])?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // tonic-prost's codec, but Txn messages decoded without recursion (src/codec.rs)
        .codec_path("crate::codec::NestedCodec")
        // keys and values shared with the buffer they were decoded from (no copy per field)
        .bytes(".mvccpb.KeyValue")
        .compile_fds(fds)?;
    Ok(())
}
