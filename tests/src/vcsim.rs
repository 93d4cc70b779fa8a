//! The ESX test rig: VMware's simulator vcsim, built from Debian's govmomi sources by the
//! Go main in this crate's `vcsim/` (`tests/vcsim/main.go`), one process per test on
//! 127.0.0.1, stopped on drop. The ESX backend's tests use it; the plugin and the backend
//! under test are theirs to load.
//!
//! Without `go` or govmomi each test prints a `SKIPPED:` line, or fails under CI
//! ([`crate::skip`]), so a green run never hides an untested backend.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::skip;

/// Where Debian's govmomi sources live (GOPATH mode).
const GOCODE: &str = "/usr/share/gocode";
/// The user the simulator accepts.
pub const USER: &str = "snaptree";

/// The built simulator, once per test process (cached under `cache` between runs); Err
/// names what is missing.
fn binary(cache: &Path) -> Result<PathBuf, String> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(|| build(cache)).clone()
}

fn build(cache: &Path) -> Result<PathBuf, String> {
    let go_ok = Command::new("go")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let govmomi_ok = Path::new(GOCODE)
        .join("src/github.com/vmware/govmomi/simulator")
        .is_dir();
    if !go_ok || !govmomi_ok {
        let what = if go_ok {
            "govmomi's simulator sources (/usr/share/gocode) are"
        } else {
            "the Go toolchain (`go`) is"
        };
        return Err(format!("vcsim cannot be built: {what} missing"));
    }
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("vcsim");
    let main_go = std::fs::read(source.join("main.go")).expect("read vcsim/main.go");
    // Cached by the source's hash, so an edit rebuilds and parallel test processes that race
    // each build to a private name and rename the result into place.
    let dir = cache.join("esx-vcsim");
    std::fs::create_dir_all(&dir).unwrap();
    let target = dir.join(format!("vcsim-{:016x}", fnv1a(&main_go)));
    if target.is_file() {
        return Ok(target);
    }
    let tmp = dir.join(format!(".vcsim.{}.tmp", std::process::id()));
    let started = Instant::now();
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&source)
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{GOCODE}:{}", dir.join("gopath").display()),
        )
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build of vcsim failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &target).unwrap();
    eprintln!("built vcsim in {:.1} s", started.elapsed().as_secs_f64());
    Ok(target)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// A VM the simulator serves.
#[derive(Debug, Clone)]
pub struct SimVm {
    /// Its name.
    pub name: String,
    /// Its moid.
    pub moid: String,
    /// Its power state at start.
    pub power: String,
}

/// A running simulator; dropped, it is stopped and waited for.
pub struct Vcsim {
    child: Child,
    /// `http[s]://127.0.0.1:PORT/sdk`.
    pub url: String,
    /// The VMs, sorted by name.
    pub vms: Vec<SimVm>,
    /// With `-tls`: the server certificate's PEM file.
    pub cert: Option<PathBuf>,
    /// The password the simulator accepts.
    pub password: String,
    dir: tempfile::TempDir,
    credentials: PathBuf,
}

impl Vcsim {
    /// Starts a simulator with extra flags (`-esx`, `-tls`); None, after saying so (under
    /// CI: a panic), when it cannot be built. `cache` is a directory kept between runs, such
    /// as a test's `env!("CARGO_TARGET_TMPDIR")`: the build is cached there by source hash.
    pub fn start(flags: &[&str], cache: &Path) -> Option<Vcsim> {
        let bin = match binary(cache) {
            Ok(bin) => bin,
            Err(why) => {
                skip::cannot_run("the ESX backend test against vcsim", &why);
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let password = format!(
            "pw-{}-{:x}",
            std::process::id(),
            fnv1a(format!("{:?}", Instant::now()).as_bytes())
        );
        let mut cmd = Command::new(bin);
        cmd.args(["-user", USER]).args(flags);
        if flags.contains(&"-tls") {
            cmd.arg("-cert-out").arg(dir.path().join("cert.pem"));
        }
        let stderr = std::fs::File::create(dir.path().join("vcsim.log")).unwrap();
        let mut child = cmd
            .env("VCSIM_PASSWORD", &password)
            .env("TMPDIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start vcsim");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let credentials = dir.path().join("credentials");
        write_private(&credentials, &format!("user={USER}\npassword={password}\n"));
        let mut sim = Vcsim {
            child,
            url: String::new(),
            vms: Vec::new(),
            cert: None,
            password,
            dir,
            credentials,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("vcsim did not get ready:\n{}", sim.log()));
            let mut words = line.split_whitespace();
            match words.next() {
                Some("URL") => sim.url = words.next().unwrap().to_string(),
                Some("CERT") => sim.cert = Some(PathBuf::from(words.next().unwrap())),
                Some("VM") => {
                    let (name, moid, power) = (
                        words.next().unwrap(),
                        words.next().unwrap(),
                        words.next().unwrap(),
                    );
                    sim.vms.push(SimVm {
                        name: name.into(),
                        moid: moid.into(),
                        power: power.into(),
                    });
                }
                Some("READY") => break,
                _ => {}
            }
        }
        assert!(sim.url.starts_with("http"), "vcsim printed no URL");
        assert!(!sim.vms.is_empty(), "vcsim serves no VM");
        Some(sim)
    }

    /// What the simulator wrote on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vcsim.log")).unwrap_or_default()
    }

    /// The first VM.
    pub fn vm(&self) -> &SimVm {
        &self.vms[0]
    }

    /// A private credentials file with the simulator's user and password.
    pub fn credentials(&self) -> &Path {
        &self.credentials
    }

    /// A scratch file path in the simulator's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A domain document for VM `vm`, with extra `<esx>` attributes.
    pub fn domain_xml(&self, vm: &str, extra: &str) -> String {
        format!(
            "<domain type='esx'><name>{vm}</name><esx url='{}' vm='{vm}' credentials='{}' {extra}/></domain>",
            self.url,
            self.credentials.display()
        )
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        // Closing stdin asks for a clean exit (vcsim then removes its datastore folders);
        // a kill follows if it does not come.
        drop(self.child.stdin.take());
        if std::thread::panicking() {
            eprintln!(
                "--- vcsim's log ---\n{}--- end of vcsim's log ---",
                self.log()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
