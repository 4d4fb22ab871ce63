// The worker protocol, generated from the repository's proto/ (server side only), with grpcio-tools'
// protoc through the PROTOC wrapper bench/native_floor.py points at.
fn main() {
    tonic_build::configure()
        .build_client(false)
        .compile_protos(&["durably/protocol/v1/worker.proto"], &["../../../proto"])
        .expect("protoc failed: set PROTOC (bench/native_floor.py does)");
}
