//! Appends to an archive with an integrity table keep a table that both
//! wimlib and wimguard accept; unchanged 10 MiB chunks reuse their old hash.

use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("starts");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{all}");
    all
}

#[test]
fn integrity_table_stays_valid_across_appends() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, wim) = (t.path().join("a"), t.path().join("b"), t.path().join("c.wim"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    // 24 MiB of incompressible data: the table has several 10 MiB chunks.
    let mut x: u64 = 88172645463325252;
    let mut v = vec![0u8; 24 << 20];
    for byte in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    std::fs::write(a.join("big.bin"), &v).unwrap();
    std::fs::write(b.join("small.txt"), "small\n").unwrap();
    let wg = env!("CARGO_BIN_EXE_wimguard");
    run(Command::new(wg).args(["archive", "capture"]).arg(&a).arg(&wim).args([
        "--name",
        "one",
        "--compression",
        "xpress",
        "--check",
    ]));
    run(Command::new(wg)
        .args(["archive", "capture"])
        .arg(&b)
        .arg(&wim)
        .args(["--name", "two"]));
    run(Command::new(wg)
        .args(["archive", "capture"])
        .arg(&a)
        .arg(&wim)
        .args(["--name", "three"]));
    let ours = run(Command::new(wg).args(["archive", "verify"]).arg(&wim));
    assert!(ours.contains("integrity table (3 chunks) matches"), "{ours}");
    let theirs = run(Command::new("wimlib-imagex").arg("verify").arg(&wim));
    assert!(
        theirs.contains("successfully verified") && !theirs.contains("WARNING"),
        "{theirs}"
    );
    // Damage a byte inside the first (reused) chunk: both tools must notice.
    let mut bytes = std::fs::read(&wim).unwrap();
    bytes[4096] ^= 0xFF;
    std::fs::write(&wim, bytes).unwrap();
    let out = Command::new(wg).args(["archive", "verify"]).arg(&wim).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("integrity check failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
