//! The sandbox shim as a program of its own, for this crate's tests and benchmarks (`mc` is
//! the shim in production).

fn main() {
    maestro_sandbox::run_shim(std::env::args_os().skip(1))
}
