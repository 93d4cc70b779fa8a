//! The libvirt test rig: a real libvirtd and virtlogd, started as root in a private mount
//! namespace (`unshare -m`) where `/etc/libvirt`, `/run/libvirt`, `/var/lib/libvirt` and
//! `/var/log/libvirt` are bind mounts of a temporary directory, so a test never touches a
//! system libvirt and several rigs run side by side; `/var/cache/libvirt` is one directory
//! under the caller's cache directory (the target dir's `tmp/`), kept between runs (QEMU
//! capability probing: about 8 s cold, well under a second warm). Clients reach it at
//! `qemu:///system?socket=<dir>/run/libvirt-sock`. Dropping the rig destroys its domains
//! and stops both daemons by pid.
//!
//! Everything the tests check goes through `virsh` and `qemu-img`/`qemu-io`: an oracle that
//! shares no code with the backend's bindings. Without root or libvirt's daemons the tests
//! say so ([`crate::skip`]), and fail under CI. The libvirt backend's tests and benchmark
//! use it; the plugin under test is theirs to load.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::skip;

/// One MiB.
pub const MIB: u64 = 1024 * 1024;

/// Why libvirt's daemons cannot run here, if they cannot.
fn missing() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("the rig starts libvirtd as root, and this is not root".into());
    }
    for tool in [
        "/usr/sbin/libvirtd",
        "/usr/sbin/virtlogd",
        "/usr/bin/virsh",
        "/usr/bin/unshare",
    ] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is not installed"));
        }
    }
    let user = Command::new("getent")
        .args(["passwd", "libvirt-qemu"])
        .output();
    if !user.is_ok_and(|o| o.status.success()) {
        return Some("the user libvirt-qemu is missing (libvirtd 9.0 looks it up)".into());
    }
    None
}

/// A running private libvirtd.
pub struct Rig {
    dir: tempfile::TempDir,
    /// The URI that reaches it.
    pub uri: String,
}

impl Rig {
    /// Starts libvirtd and virtlogd and waits until libvirtd answers; None, after saying
    /// so (under CI: a panic), when libvirt's daemons cannot run here. `cache` is a
    /// directory kept between runs, such as a test's `env!("CARGO_TARGET_TMPDIR")`: QEMU's
    /// capabilities probed there are reused.
    pub fn start(cache: &Path) -> Option<Rig> {
        if let Some(why) = missing() {
            skip::cannot_run("the libvirt backend tests", &why);
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("snaptree-libvirt-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        for sub in ["etc", "run", "lib", "log", "vm"] {
            std::fs::create_dir(p.join(sub)).unwrap();
        }
        let cache = cache.join("libvirt-cache");
        std::fs::create_dir_all(&cache).unwrap();
        // Mount points must exist outside the namespace too: empty directories.
        for m in [
            "/etc/libvirt",
            "/run/libvirt",
            "/var/lib/libvirt",
            "/var/cache/libvirt",
            "/var/log/libvirt",
        ] {
            std::fs::create_dir_all(m).unwrap();
        }
        // QEMU as root (no libvirt-qemu ownership dance on the test's files), no per-VM
        // mount namespace (containers may forbid it), no owner remembering (xattrs).
        std::fs::write(
            p.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\nnamespaces = []\nremember_owner = 0\n",
        )
        .unwrap();
        std::fs::write(
            p.join("etc/libvirtd.conf"),
            "unix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
        )
        .unwrap();
        let d = p.display();
        let script = format!(
            "set -e\n\
             mount --bind {d}/etc /etc/libvirt\n\
             mount --bind {d}/run /run/libvirt\n\
             mount --bind {d}/lib /var/lib/libvirt\n\
             mount --bind {c} /var/cache/libvirt\n\
             mount --bind {d}/log /var/log/libvirt\n\
             virtlogd -d -p {d}/virtlogd.pid\n\
             libvirtd -d -p {d}/libvirtd.pid -f {d}/etc/libvirtd.conf\n",
            c = cache.display()
        );
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        let rig = Rig {
            uri: format!("qemu:///system?socket={d}/run/libvirt-sock"),
            dir,
        };
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            drop(rig);
            skip::cannot_run(
                "the libvirt backend tests",
                &format!("libvirtd did not start: {why}"),
            );
            return None;
        }
        let started = Instant::now();
        loop {
            if rig.try_virsh(&["version"]).is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "libvirtd did not answer within 60 s; see {}/log",
                rig.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(rig)
    }

    /// The rig's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs virsh against the rig; Err is its stderr.
    pub fn try_virsh(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("virsh")
            .arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Runs virsh against the rig and panics when it fails.
    pub fn virsh(&self, args: &[&str]) -> String {
        self.try_virsh(args)
            .unwrap_or_else(|e| panic!("virsh {}: {e}", args.join(" ")))
    }

    /// Defines a tiny domain (no OS: it boots into nothing, which is enough for its
    /// disks) with `disks` 64 MiB qcow2 disks in `mode` ("internal" or "external").
    pub fn define(&self, name: &str, disks: usize, mode: &str) -> TestDomain {
        let dir = self.dir().join("vm").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = Vec::new();
        let mut disk_xml = String::new();
        for i in 0..disks {
            let f = dir.join(format!("d{i}.qcow2"));
            let st = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&f)
                .arg("64M")
                .status()
                .unwrap();
            assert!(st.success());
            disk_xml.push_str(&format!(
                "<disk type='file' device='disk' snapshot='{mode}'><driver name='qemu' type='qcow2'/>\
                 <source file='{}'/><target dev='vd{}' bus='virtio'/></disk>",
                f.display(),
                (b'a' + i as u8) as char
            ));
            files.push(f);
        }
        let kind = if Path::new("/dev/kvm").exists() {
            "kvm"
        } else {
            "qemu"
        };
        let xml = format!(
            "<domain type='{kind}'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>\
             <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{disk_xml}</devices></domain>"
        );
        let path = dir.join("domain.xml");
        std::fs::write(&path, xml).unwrap();
        self.virsh(&["define", path.to_str().unwrap()]);
        TestDomain {
            name: name.to_owned(),
            files,
            snaptree_xml: format!(
                "<domain type='libvirt'><name>{name}</name><libvirt uri='{}' domain='{name}'/></domain>",
                self.uri.replace('&', "&amp;")
            ),
        }
    }

    /// Removes a domain and its snapshot metadata (stopping it first).
    pub fn undefine(&self, name: &str) {
        let _ = self.try_virsh(&["destroy", name]);
        let _ = self.try_virsh(&["undefine", name, "--snapshots-metadata"]);
    }

    /// `virsh snapshot-list --tree`, with every line trimmed of trailing blanks.
    pub fn tree(&self, name: &str) -> String {
        self.virsh(&["snapshot-list", name, "--tree"])
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Each snapshot name with its parent's ("" for a root), from `snapshot-list --parent`.
    pub fn parents(&self, name: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .virsh(&["snapshot-list", name, "--parent"])
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // name, date, time, zone, state, [parent]
                (f.len() >= 5).then(|| {
                    (
                        f[0].to_owned(),
                        f.get(5).map(|s| s.to_string()).unwrap_or_default(),
                    )
                })
            })
            .collect();
        out.sort();
        out
    }

    /// libvirt's current snapshot, if any.
    pub fn current(&self, name: &str) -> Option<String> {
        self.try_virsh(&["snapshot-current", name, "--name"])
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// The active image of each disk, from `virsh domblklist`.
    pub fn blklist(&self, name: &str) -> Vec<PathBuf> {
        self.virsh(&["domblklist", name])
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(PathBuf::from))
            .collect()
    }

    /// An HMP command through libvirt's monitor.
    pub fn hmp(&self, name: &str, command: &str) -> String {
        self.virsh(&["qemu-monitor-command", name, "--hmp", command])
    }

    /// Writes `pattern` over `len` bytes at `offset` of disk `disk` (0-based) of a running
    /// domain, through HMP qemu-io, and flushes it to the image.
    pub fn guest_write(&self, name: &str, disk: usize, pattern: u8, offset: u64, len: u64) {
        let dev = format!("/machine/peripheral/virtio-disk{disk}/virtio-backend");
        self.hmp(
            name,
            &format!("qemu-io -d {dev} \"write -P {pattern:#04x} {offset} {len}\""),
        );
        self.hmp(name, &format!("qemu-io -d {dev} flush"));
    }

    /// Whether the running guest's disk `disk` holds `pattern` there: HMP qemu-io prints
    /// to QEMU's stdout, not the reply, so flush through the monitor and read the active
    /// image from outside with a shared lock.
    pub fn guest_reads(&self, name: &str, disk: usize, pattern: u8, offset: u64, len: u64) -> bool {
        self.hmp(
            name,
            &format!("qemu-io -d /machine/peripheral/virtio-disk{disk}/virtio-backend flush"),
        );
        image_reads(&self.blklist(name)[disk], None, pattern, offset, len)
    }
}

impl Rig {
    /// Stops libvirtd (SIGTERM by its pid, waiting for it to exit) and starts it again in
    /// the rig's mount namespace (entered through virtlogd, which keeps running). QEMU
    /// keeps running meanwhile, as on a host where libvirtd is upgraded.
    pub fn restart_libvirtd(&self) {
        let d = self.dir().display().to_string();
        let pid = std::fs::read_to_string(self.dir().join("libvirtd.pid")).unwrap();
        let pid = pid.trim().to_owned();
        assert!(Command::new("kill").arg(&pid).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "libvirtd {pid} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        let logd = std::fs::read_to_string(self.dir().join("virtlogd.pid")).unwrap();
        let st = Command::new("nsenter")
            .args(["-t", logd.trim(), "-m", "libvirtd", "-d", "-p"])
            .arg(format!("{d}/libvirtd.pid"))
            .arg("-f")
            .arg(format!("{d}/etc/libvirtd.conf"))
            .status()
            .unwrap();
        assert!(st.success(), "libvirtd did not start again");
        while self.try_virsh(&["version"]).is_err() {
            assert!(Instant::now() < deadline, "libvirtd did not answer again");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the QEMU running domain `name` with SIGKILL, by the pid libvirt recorded.
    pub fn kill_qemu(&self, name: &str) {
        let pid = std::fs::read_to_string(self.dir().join(format!("run/qemu/{name}.pid")))
            .unwrap_or_else(|e| panic!("QEMU's pid file of {name}: {e}"));
        let pid = pid.trim().to_owned();
        assert!(
            Command::new("kill")
                .args(["-9", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.virsh(&["domstate", name]).trim() != "shut off" {
            assert!(
                Instant::now() < deadline,
                "libvirt did not see QEMU {pid} die"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The block job on disk `disk` of domain `name` as (cur, end), from `virsh blockjob
    /// --raw`; None when there is none.
    pub fn block_job(&self, name: &str, disk: &str) -> Option<(u64, u64)> {
        let out = self.try_virsh(&["blockjob", name, disk, "--raw"]).ok()?;
        let field = |k: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("cur=")?, field("end=")?))
    }

    /// Waits until a block job on the disk has copied something.
    pub fn wait_for_job_progress(&self, name: &str, disk: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.block_job(name, disk).is_some_and(|(cur, _)| cur > 0) {
                return;
            }
            assert!(Instant::now() < deadline, "no block job on {name} {disk}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl TestDomain {
    /// The snaptree document with block jobs limited to `bytes_per_second`.
    pub fn limited_xml(&self, bytes_per_second: u64) -> String {
        self.snaptree_xml.replace(
            &format!("domain='{}'/>", self.name),
            &format!("domain='{}' bandwidth='{bytes_per_second}'/>", self.name),
        )
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // libvirtd leaves its QEMUs running when it exits: stop them first.
        if let Ok(list) = self.try_virsh(&["list", "--name"]) {
            for name in list.lines().map(str::trim).filter(|n| !n.is_empty()) {
                let _ = self.try_virsh(&["destroy", name]);
            }
        }
        let mut pids = Vec::new();
        for f in ["libvirtd.pid", "virtlogd.pid"] {
            if let Ok(s) = std::fs::read_to_string(self.dir().join(f)) {
                pids.extend(s.trim().parse::<u32>().ok());
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.dir().join("run/qemu")) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "pid")
                    && let Ok(s) = std::fs::read_to_string(e.path())
                {
                    pids.extend(s.trim().parse::<u32>().ok());
                }
            }
        }
        for pid in &pids {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for pid in &pids {
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// A domain the rig defined.
pub struct TestDomain {
    /// Its libvirt name.
    pub name: String,
    /// Its disk files, as defined (the base images).
    pub files: Vec<PathBuf>,
    /// The snaptree `<domain type='libvirt'>` document for it.
    pub snaptree_xml: String,
}

/// Whether every guest byte of `image` (read with a shared lock, through its backing
/// chain; or of its internal snapshot tagged `snapshot`) in the range is `pattern`.
pub fn image_reads(
    image: &Path,
    snapshot: Option<&str>,
    pattern: u8,
    offset: u64,
    len: u64,
) -> bool {
    let read = format!("read -q -P {pattern:#04x} {offset} {len}");
    let out = match snapshot {
        Some(tag) => {
            // qemu-io cannot open an internal snapshot: export it to raw first.
            let raw = tempfile::NamedTempFile::new().unwrap();
            let st = Command::new("qemu-img")
                .args(["convert", "-U", "-f", "qcow2", "-O", "raw", "-l"])
                .arg(format!("snapshot.name={tag}"))
                .arg(image)
                .arg(raw.path())
                .status()
                .unwrap();
            assert!(st.success(), "export snapshot {tag} of {}", image.display());
            Command::new("qemu-io")
                .args(["-r", "-f", "raw", "-c", &read])
                .arg(raw.path())
                .output()
                .unwrap()
        }
        None => Command::new("qemu-io")
            .args(["-r", "-U", "-f", "qcow2", "-c", &read])
            .arg(image)
            .output()
            .unwrap(),
    };
    out.status.success()
        && !String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed")
}

/// Writes `pattern` over the range of a shut-off domain's disk file (qemu-io).
pub fn image_write(image: &Path, pattern: u8, offset: u64, len: u64) {
    let st = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            &format!("write -q -P {pattern:#04x} {offset} {len}"),
        ])
        .arg(image)
        .status()
        .unwrap();
    assert!(st.success(), "write to {}", image.display());
}
