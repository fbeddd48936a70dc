//! Repository tasks. `cargo run -p xtask -- crds` regenerates `crds/*.yaml` (and the Helm chart's
//! copies in `charts/signet/files/crds/`) from the Rust types in `signet-api`;
//! `cargo run -p xtask -- crds --check` fails when the committed files differ.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["crds"] => write_crds(false),
        ["crds", "--check"] => write_crds(true),
        _ => {
            eprintln!("usage: cargo run -p xtask -- crds [--check]");
            eprintln!(
                "  crds          regenerate crds/*.yaml and charts/signet/files/crds from crates/signet-api"
            );
            eprintln!("  crds --check  fail if the committed crds/ differ from the types");
            std::process::exit(2);
        }
    }
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where generated CRDs live: for `kubectl apply -f crds/` and for the chart's CRD template.
const CRD_DIRS: [&str; 2] = ["crds", "charts/signet/files/crds"];

fn write_crds(check_only: bool) -> anyhow::Result<()> {
    let root = repository_root();
    let mut stale = Vec::new();
    for (file, crd) in signet_api::crds() {
        let yaml = signet_api::crd_yaml(&crd)?;
        for dir in CRD_DIRS {
            let path = root.join(dir).join(file);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == yaml {
                continue;
            }
            if check_only {
                stale.push(format!("{dir}/{file}"));
            } else {
                std::fs::create_dir_all(root.join(dir))
                    .with_context(|| format!("creating {dir}"))?;
                std::fs::write(&path, &yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated CRDs are out of date ({}); run `cargo run -p xtask -- crds`",
            stale.join(", ")
        );
    }
    println!("{} are up to date", CRD_DIRS.join(" and "));
    Ok(())
}
