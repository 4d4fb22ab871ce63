// protoc comes from grpcio-tools through the PROTOC wrapper bench/native_floor.py points at. The
// worker protocol is generated from the repository's own proto/, the one definition of the wire
// (server side only: its `Connect` rpc would clash with the generated client's constructor).
fn main() {
    tonic_build::configure()
        .compile_protos(&["pingpong.proto"], &["."])
        .expect("protoc failed: set PROTOC (bench/native_floor.py does)");
    tonic_build::configure()
        .build_client(false)
        .compile_protos(&["durably/protocol/v1/worker.proto"], &["../../proto"])
        .expect("protoc failed: set PROTOC (bench/native_floor.py does)");
}
