//! Generates the gRPC code from `tankwatch/agent/v1/agent.proto`.
//! Uses the protoc shipped by `protoc-bin-vendored` unless `PROTOC` is set,
//! so a fresh machine needs nothing but cargo.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    println!("cargo:rerun-if-changed=tankwatch/agent/v1/agent.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["tankwatch/agent/v1/agent.proto"], &["."])?;
    Ok(())
}
