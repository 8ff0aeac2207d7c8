//! The sandbox shim as a program of its own, for this crate's tests and benchmarks (`mc` is
//! the shim in production). With `--launcher` as its first argument it is the launcher instead.

fn main() {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|first| first == "--launcher") {
        maestro_sandbox::run_launcher()
    }
    maestro_sandbox::run_shim(args)
}
