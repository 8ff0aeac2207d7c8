//! Many `mc` processes on one state root at once.

use std::process::Stdio;

use crate::util::{Env, job_yaml, parse_json};

#[test]
fn fifty_concurrent_submissions_keep_every_record_intact() {
    let env = Env::new();
    let file = env.write(
        "j.yaml",
        &job_yaml(
            "c",
            "  - name: a\n    run: echo $MAESTRO_JOB_ID\n  - name: b\n    command: ['true']\n",
        ),
    );
    let children: Vec<_> = (0..50)
        .map(|_| {
            env.mc()
                .args([
                    "submit",
                    file.to_str().unwrap(),
                    "--output",
                    "json",
                    "--quiet",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json = parse_json(&output);
        assert_eq!(json["state"], "SUCCEEDED");
        ids.push(json["job_id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    assert_eq!(env.job_ids().len(), 50);
    // Each is in the index once: the listing (read from it) has every job, none twice.
    let listed = parse_json(&env.run(&["status", "--limit", "0", "--output", "json"]));
    let mut listed: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ids);
    let index = std::fs::read(env.state.join(maestro_core::state::file::INDEX)).unwrap();
    assert_eq!(index.len(), 51 * 37, "a header and one line per job");
    for id in &ids {
        let stored = env.stored(id);
        let states: Vec<&str> = stored["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["SUBMITTED", "RUNNING", "SUCCEEDED"]);
        assert!(env.step_log(id, "a").contains(&format!(" out {id}\n")));
    }
    let audit = env.audit();
    // Per job: 3 transitions, 5 policy decisions, 2 steps; and the chain's genesis record.
    assert_eq!(audit.len(), 50 * 10 + 1);
    assert_eq!(audit[0]["event"], "audit.genesis");
    for id in &ids {
        assert_eq!(
            audit.iter().filter(|r| r["job_id"] == id.as_str()).count(),
            10
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(env.state.join("jobs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging directories left behind");
}
