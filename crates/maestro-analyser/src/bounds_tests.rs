//! Every input is decided within the time and memory bounds, measured in a child process.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The bounds the analysis promises for any input.
const MAX_MILLIS: u128 = 1000;
const MAX_PEAK_KIB: u64 = 64 * 1024;

/// Environment variable naming the script file the child analyses.
const CHILD_SCRIPT: &str = "MAESTRO_ANALYSER_MEASURE_SCRIPT";

/// Peak resident memory of this process so far, from `/proc/self/status`.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Run by [`measure`] in a child process (it does nothing when run directly): analyses the
/// script and prints how much the peak resident memory grew, how long it took, and the rules.
#[test]
#[ignore = "run by measure() in a child process"]
fn measured_child() {
    let Some(path) = std::env::var_os(CHILD_SCRIPT) else {
        return;
    };
    let script = std::fs::read_to_string(path).expect("read the script");
    let before = vm_hwm_kib();
    let start = Instant::now();
    let findings = super::analyse_shell(&script, &BTreeMap::new());
    let millis = start.elapsed().as_millis();
    let grown = vm_hwm_kib().saturating_sub(before);
    let rules: Vec<&str> = findings.iter().map(|f| f.rule.id()).collect();
    println!("MEASURED {grown} {millis} {}", rules.join(","));
}

/// What the child measured.
struct Measured {
    peak_kib: u64,
    millis: u128,
    rules: Vec<String>,
}

/// Analyses `script` in a child process (this test binary running [`measured_child`]) and
/// returns its memory growth, time and rules. The child is killed after 60 s and may not use more
/// than 4 GiB of data, so a regression fails the test rather than the machine.
fn measure(name: &str, script: &str) -> Measured {
    let path: PathBuf =
        std::env::temp_dir().join(format!("maestro-analyser-{}-{name}.sh", std::process::id()));
    std::fs::write(&path, script).expect("write the script");
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new("prlimit")
        .arg("--data=4294967296")
        .arg("--")
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "bounds_tests::measured_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_SCRIPT, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the measuring child (needs prlimit from util-linux)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&path);
            panic!("{name}: the analysis ran for more than 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&path);
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .expect("read the child's output");
    assert!(
        status.success(),
        "{name}: the child failed: {status}\n{out}"
    );
    let line = out
        .lines()
        .find_map(|l| l.split_once("MEASURED ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("{name}: no measurement in {out:?}"));
    let mut fields = line.splitn(3, ' ');
    let peak_kib = fields.next().and_then(|f| f.parse().ok()).expect("peak");
    let millis = fields.next().and_then(|f| f.parse().ok()).expect("millis");
    let rules = fields
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    Measured {
        peak_kib,
        millis,
        rules,
    }
}

fn assert_bounded(name: &str, script: &str, expected_rules: &[&str]) {
    let m = measure(name, script);
    assert!(
        m.peak_kib < MAX_PEAK_KIB,
        "{name}: peak memory grew by {} KiB",
        m.peak_kib
    );
    assert!(m.millis < MAX_MILLIS, "{name}: took {} ms", m.millis);
    assert_eq!(m.rules, expected_rules, "{name}");
}

fn doublings(n: usize, last: &str) -> String {
    format!("x=a\n{}{last}\n", "x=$x$x\n".repeat(n))
}

#[test]
fn doubling_a_variable_thirty_times_is_bounded() {
    assert_bounded("double30", &doublings(30, "echo $x"), &[]);
}

#[test]
fn doubling_a_variable_sixty_times_is_bounded() {
    assert_bounded("double60", &doublings(60, "echo $x"), &[]);
}

#[test]
fn deeply_nested_inputs_are_bounded() {
    let deep_subst = format!("{}rm -rf /{}", "$(".repeat(5_000), ")".repeat(5_000));
    let m = measure("deep-subst", &deep_subst);
    assert!(m.peak_kib < MAX_PEAK_KIB && m.millis < MAX_MILLIS);
    assert!(
        !m.rules.is_empty()
            && m.rules
                .iter()
                .all(|r| ["too-deeply-nested", "too-complex", "dynamic-command"]
                    .contains(&r.as_str())),
        "{:?}",
        m.rules
    );
    let deep_parens = format!("{}true{}", "(".repeat(20_000), ")".repeat(20_000));
    let m = measure("deep-parens", &deep_parens);
    assert!(m.peak_kib < MAX_PEAK_KIB && m.millis < MAX_MILLIS);
    let nested_eval = format!("{}rm -rf /", "eval ".repeat(20));
    assert_bounded("nested-eval", &nested_eval, &["too-deeply-nested"]);
}

#[test]
fn huge_inputs_are_bounded() {
    // Just over the size limit: refused without reading.
    let huge = "echo hi\n".repeat(super::MAX_SCRIPT_BYTES / 8 + 1);
    assert_bounded("huge", &huge, &["too-complex"]);
    // Many variables copied into many substitutions: the copies are paid for.
    let mut many = String::new();
    for n in 0..400 {
        many.push_str(&format!("v{n}={}\n", "y".repeat(200)));
    }
    many.push_str(&"echo $(true)\n".repeat(3_000));
    assert_bounded("many-copies", &many, &["too-complex"]);
    // A long pipeline of producers feeding each other's standard input.
    let pipeline = format!(
        "x={}\n{}cat\n",
        "z".repeat(4000),
        "echo $x $x $x |".repeat(3_000)
    );
    assert_bounded("long-pipeline", &pipeline, &["too-complex"]);
}
#[test]
fn doubling_into_a_destructive_argument_is_opaque() {
    // The value outgrows what is tracked, so `rm -rf` gets an argument known only at run time.
    assert_bounded(
        "double-rm",
        &doublings(60, "rm -rf \"$x\""),
        &["dynamic-argument"],
    );
}

#[test]
fn hostile_aliases_and_written_files_are_bounded() {
    // Each alias expands to two copies of the one before: the nesting bound stops it.
    let mut aliases = String::from("alias a0='echo hi'\n");
    for n in 1..40 {
        aliases.push_str(&format!("alias a{n}='a{m}; a{m}'\n", m = n - 1));
    }
    aliases.push_str("a39\n");
    let m = measure("alias-doubling", &aliases);
    assert!(m.peak_kib < MAX_PEAK_KIB && m.millis < MAX_MILLIS);
    assert!(
        !m.rules.is_empty()
            && m.rules
                .iter()
                .all(|r| ["too-deeply-nested", "too-complex"].contains(&r.as_str())),
        "{:?}",
        m.rules
    );
    // A definition that outgrew what is tracked is only known at run time.
    assert_bounded(
        "alias-doubled-definition",
        &doublings(60, "alias k=\"$x\"\nk /"),
        &["dynamic-code"],
    );
    // Thousands of files written and run: only a few are remembered, the rest still count.
    let mut files = String::new();
    for n in 0..3_000 {
        files.push_str(&format!("echo 'echo {n}' > f{n}.sh; sh f{n}.sh\n"));
    }
    let m = measure("written-files", &files);
    assert!(m.peak_kib < MAX_PEAK_KIB && m.millis < MAX_MILLIS);
    assert!(
        m.rules
            .iter()
            .all(|r| ["dynamic-code", "too-complex"].contains(&r.as_str())),
        "{:?}",
        m.rules
    );
}
