// protoc comes from grpcio-tools through the PROTOC wrapper bench/native_floor.py points at.
fn main() {
    tonic_build::configure()
        .compile_protos(&["pingpong.proto"], &["."])
        .expect("pingpong.proto: set PROTOC (bench/native_floor.py does)");
}
