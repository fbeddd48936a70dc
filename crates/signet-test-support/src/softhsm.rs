//! SoftHSM2 tokens for the PKCS#11 tests: a private token directory per test, initialized with
//! `softhsm2-util`. A PKCS#11 module reads its configuration from the environment
//! (`SOFTHSM2_CONF`), which a test cannot safely set for itself in process, so an in-process
//! test runs its body in a child process of its own test binary ([`run_in_child`]); tests of
//! the `signet` binary pass [`SoftHsm::env`] to the process they start.

#![expect(
    clippy::expect_used,
    reason = "test fixtures fail loudly, with the reason"
)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "4711-signet";
const SO_PIN: &str = "0000-signet";
const CHILD_MARKER: &str = "SIGNET_TEST_SOFTHSM_CHILD";

/// A SoftHSM2 configuration with its own token directory.
#[derive(Debug)]
pub struct SoftHsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl SoftHsm {
    /// A token directory holding one initialized token per label.
    ///
    /// # Panics
    /// When SoftHSM2 is not installed (`.ci/run` installs the Debian package `softhsm2`).
    pub fn with_tokens(labels: &[&str]) -> Self {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed ({MODULE} missing): apt-get install softhsm2 (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("conf");
        let hsm = Self { dir, conf };
        for label in labels {
            let output = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label])
                .args(["--pin", PIN, "--so-pin", SO_PIN])
                .env("SOFTHSM2_CONF", &hsm.conf)
                .output()
                .expect("softhsm2-util must be installed (Debian package softhsm2)");
            assert!(
                output.status.success(),
                "softhsm2-util --init-token: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        hsm
    }

    /// The environment variable that points a process at these tokens.
    pub fn env(&self) -> (&'static str, OsString) {
        ("SOFTHSM2_CONF", self.conf.clone().into_os_string())
    }

    /// The directory holding the configuration and tokens.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs the calling test again in a child process with tokens `labels` configured, and returns
/// `false` once the child passed: the caller then returns. In the child it returns `true`: the
/// caller runs its body. `test` is the test function's name.
///
/// # Panics
/// When the child fails (its output is shown).
pub fn run_in_child(test: &str, labels: &[&str]) -> bool {
    if std::env::var_os(CHILD_MARKER).is_some() {
        return true;
    }
    let hsm = SoftHsm::with_tokens(labels);
    let (key, value) = hsm.env();
    let exe = std::env::current_exe().expect("the test binary");
    let output = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(key, value)
        .env(CHILD_MARKER, "1")
        .output()
        .expect("re-running the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the test body failed in its child process:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    false
}
