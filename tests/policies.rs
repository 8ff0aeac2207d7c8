//! Every policy allowing and denying, through `mc`; destructive specs only ever run jailed.

use crate::util::{Env, jailed, parse_json, text};

/// Submit `spec` inside the jail and return the JSON report. The step of every spec here would
/// create `ran` in the workspace if it ever ran.
fn submit_jailed(env: &Env, spec: &str) -> (Option<i32>, serde_json::Value) {
    let file = env.write("job.json", spec);
    let output = jailed(env, &["submit", file.to_str().unwrap(), "--output", "json"]);
    (output.status.code(), parse_json(&output))
}

#[test]
fn denied_jobs_never_run_and_every_reason_is_recorded() {
    let env = Env::new();
    // Four violations at once; the destructive command would also touch the marker first.
    let spec = r#"{"name":"bad","owner":" ","environment":"Production",
        "steps":[{"name":"wipe","run":"touch ran && sudo rm -r -f --no-preserve-root /","timeout_seconds":7200}]}"#;
    let (code, json) = submit_jailed(&env, spec);
    assert_eq!(code, Some(3));
    assert_eq!(json["state"], "DENIED");
    assert!(json["steps"].as_array().unwrap().is_empty());
    assert!(!env.path().join("ran").exists(), "a denied job ran a step");
    let denied: Vec<&str> = json["policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["allowed"] == false)
        .map(|v| v["policy"].as_str().unwrap())
        .collect();
    assert_eq!(
        denied,
        [
            "owner-present",
            "no-destruction",
            "prod-requires-approval",
            "max-step-timeout"
        ]
    );

    let job_id = json["job_id"].as_str().unwrap();
    let status = env.status(job_id);
    assert_eq!(status["state"], "DENIED");
    let states: Vec<&str> = status["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["SUBMITTED", "DENIED"]);
    assert_eq!(status["policies"].as_array().unwrap().len(), 5);
    let text_status = text(&env.run(&["status", job_id]).stdout);
    assert!(
        text_status.contains("denied   no-destruction: step \"wipe\""),
        "{text_status}"
    );
    let decisions = env
        .audit()
        .into_iter()
        .filter(|r| r["event"] == "policy.decision")
        .count();
    assert_eq!(decisions, 5);
    assert!(
        env.path().join("job.json").exists(),
        "the jail let the workspace be written"
    );
}

#[test]
fn each_policy_denies_on_its_own() {
    let cases = [
        (
            "owner-present",
            r#"{"name":"j","environment":"dev","steps":[{"name":"s","run":"touch ran"}]}"#,
        ),
        (
            "no-destruction",
            r#"{"name":"j","owner":"ana","steps":[{"name":"s","command":["env","FOO=1","/bin/rm","-fr","~"]}]}"#,
        ),
        (
            "no-destruction",
            r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"touch ran; (cd /tmp && bash -c 'mkfs.ext4 /dev/sda') &"}]}"#,
        ),
        (
            "prod-requires-approval",
            r#"{"name":"j","owner":"ana","environment":"PROD","approval":{"approved_by":"ana"},"steps":[{"name":"s","run":"touch ran"}]}"#,
        ),
        (
            "max-step-timeout",
            r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"touch ran","timeout_seconds":3601}]}"#,
        ),
    ];
    for (policy, spec) in cases {
        let env = Env::new();
        let (code, json) = submit_jailed(&env, spec);
        assert_eq!(code, Some(3), "{policy}: {json}");
        let denied: Vec<&str> = json["policies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["allowed"] == false)
            .map(|v| v["policy"].as_str().unwrap())
            .collect();
        assert_eq!(denied, [policy], "{spec}");
        assert!(!env.path().join("ran").exists());
    }
}

#[test]
fn allowed_jobs_run_including_lookalikes_of_destruction() {
    let env = Env::new();
    let spec = r#"{"name":"j","owner":"ana","environment":"prod","approval":{"approved_by":"bo","reason":"release"},
        "steps":[{"name":"s","run":"mkdir -p build && rm -rf ./build && echo \"rm -rf /\" && grep -r \"DROP TABLE\" . ; touch ran","timeout_seconds":3600}]}"#;
    let (code, json) = submit_jailed(&env, spec);
    assert_eq!(code, Some(0), "{json}");
    assert!(
        json["policies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["allowed"] == true)
    );
    assert!(env.path().join("ran").exists());
}

#[test]
fn the_maximum_timeout_is_configurable() {
    let env = Env::new();
    let file = env.write(
        "j.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"true","timeout_seconds":120}]}"#,
    );
    assert_eq!(
        env.run(&["validate", file.to_str().unwrap()]).status.code(),
        Some(0)
    );
    assert_eq!(
        env.run(&[
            "validate",
            file.to_str().unwrap(),
            "--max-step-timeout",
            "60"
        ])
        .status
        .code(),
        Some(3)
    );
    let output = env
        .mc()
        .args(["validate", file.to_str().unwrap()])
        .env("MAESTRO_MAX_STEP_TIMEOUT", "100")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let no_timeout = env.write(
        "k.json",
        r#"{"name":"j","owner":"ana","steps":[{"name":"s","run":"true"}]}"#,
    );
    let output = env.run(&[
        "validate",
        no_timeout.to_str().unwrap(),
        "--default-step-timeout",
        "5000",
    ]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "the default timeout counts as the step's effective timeout"
    );
}
