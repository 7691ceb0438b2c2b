//! `tss-audit` as a user runs it: exit codes and report lines on bad input.
//! (A real transcript passing every check: `tests/e2e/transcript.rs`.)

use std::process::Command;

fn audit(transcript: &std::path::Path, parties: &std::path::Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tss-audit"))
        .arg("verify")
        .arg(transcript)
        .arg("--parties")
        .arg(parties)
        .output()
        .expect("run tss-audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
#[allow(non_snake_case)]
fn tss_audit__should_fail_format_and_skip_the_rest_on_a_file_that_is_not_a_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("k.transcript");
    std::fs::write(&t, b"not a transcript").unwrap();
    let p = dir.path().join("parties.toml");
    std::fs::write(
        &p,
        "[[parties]]\nname = \"a\"\nidentity = \"00\"\ntls_fingerprint = \"00\"\n",
    )
    .unwrap();
    let (code, out) = audit(&t, &p);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  format"), "{out}");
    assert_eq!(out.matches("skip  ").count(), 12, "{out}");
    assert!(out.contains("FAIL: format"), "{out}");
}

#[test]
#[allow(non_snake_case)]
fn tss_audit__should_exit_2_when_a_file_is_missing_or_parties_is_not_toml() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("k.transcript");
    std::fs::write(&t, b"x").unwrap();
    let (code, out) = audit(&dir.path().join("missing"), &t);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot read"), "{out}");
    let p = dir.path().join("parties.toml");
    std::fs::write(&p, "this is not toml [").unwrap();
    let (code, out) = audit(&t, &p);
    assert_eq!(code, 2, "{out}");
}
