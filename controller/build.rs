//! Names the build for `trellis version` and `trellis_build_info`: the
//! git commit when built from a checkout, and the versions of the key
//! dependencies as Cargo.lock has them.

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let head = root.join(".git/HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    // A commit moves the branch HEAD names, not HEAD itself.
    if let Some(r) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_owned()))
    {
        println!(
            "cargo:rerun-if-changed={}",
            root.join(".git").join(r).display()
        );
    }
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let wanted = [
        "tokio",
        "hyper",
        "axum",
        "serde_json",
        "rmp-serde",
        "ciborium",
        "ed25519-dalek",
        "serde-saphyr",
        "prometheus-client",
        "redis",
    ];
    let mut found = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take())
            && wanted.contains(&n.as_str())
            && !found.iter().any(|(f, _): &(String, String)| *f == n)
        {
            found.push((n, v.trim_matches('"').to_owned()));
        }
    }
    let deps: Vec<String> = found.iter().map(|(n, v)| format!("{n} {v}")).collect();
    println!("cargo:rustc-env=TRELLIS_DEPS={}", deps.join(", "));
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TRELLIS_COMMIT={commit}");
}
