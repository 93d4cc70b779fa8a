//! The domain's `<esx>` element and the credentials it points to.
//!
//! ```xml
//! <domain type='esx'>
//!   <name>web01</name>
//!   <esx url='https://vcenter.example/sdk' vm='web01' credentials='/etc/snaptree/vc.cred'/>
//! </domain>
//! ```
//!
//! The password never appears in the domain XML (it is stored and shown): it comes from the
//! credentials file or from `$SNAPTREE_ESX_PASSWORD`, lives in a [`Secret`] that prints as
//! `<redacted>`, and is used in one place, the Login request.

use std::fmt;
use std::path::{Path, PathBuf};

use snaptree_engine::xml::dom::{Document, Element};
use snaptree_sdk::{PluginError, PluginResult};

use crate::http::{Endpoint, TlsOptions};

/// The environment variable read for the user name when neither the XML nor the
/// credentials file gives one.
pub const USER_ENV: &str = "SNAPTREE_ESX_USER";
/// The environment variable read for the password when no credentials file is named.
pub const PASSWORD_ENV: &str = "SNAPTREE_ESX_PASSWORD";

/// A password: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Secret {
        Secret(password.into())
    }

    /// The password, for the one request that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and password for the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: Secret,
}

/// How the VM is named: by name, by managed object id, or both (then they must agree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSelector {
    /// The VM's name in the inventory.
    pub name: Option<String>,
    /// The VM's managed object id (`vm-42`).
    pub moid: Option<String>,
}

impl fmt::Display for VmSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, &self.moid) {
            (Some(n), Some(m)) => write!(f, "VM '{n}' ({m})"),
            (Some(n), None) => write!(f, "VM '{n}'"),
            (None, Some(m)) => write!(f, "VM {m}"),
            (None, None) => f.write_str("VM"),
        }
    }
}

/// What the domain XML says about the ESX side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsxConfig {
    /// The domain's name, for messages.
    pub domain: String,
    /// The SOAP endpoint.
    pub endpoint: Endpoint,
    /// The VM.
    pub vm: VmSelector,
    /// Who logs in.
    pub credentials: Credentials,
    /// Certificate checking for `https://`.
    pub tls: TlsOptions,
    /// Whether a snapshot of a powered-on VM includes its memory (default yes, as libvirt's
    /// ESX driver does unless asked for a disk-only snapshot): reverting to it then resumes
    /// the guest where it was, which is what "running" in a snapshot's state means.
    pub memory: bool,
    /// Whether a disk-only snapshot of a powered-on VM asks VMware Tools to quiesce the
    /// guest's file systems first (default no: it needs Tools in the guest).
    pub quiesce: bool,
}

/// Where values the XML does not give come from; the real one reads the process
/// environment, tests pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl EsxConfig {
    /// Reads the `<esx>` element of a domain document and resolves its credentials.
    pub fn from_domain_xml(xml: &str, env: EnvLookup<'_>) -> PluginResult<EsxConfig> {
        let doc = Document::parse(xml)?;
        let domain = doc
            .root
            .children_named("name")
            .next()
            .map(|n| n.text.clone())
            .unwrap_or_default();
        let mut esx = doc.root.children_named("esx");
        let el = esx.next().ok_or_else(|| {
            PluginError::invalid_arg(format!(
                "domain '{domain}' has no <esx url='https://HOST/sdk' vm='NAME'/> element saying which vSphere endpoint and VM it is"
            ))
        })?;
        if esx.next().is_some() {
            return Err(PluginError::invalid_arg(format!(
                "domain '{domain}' has more than one <esx> element"
            )));
        }
        for (key, _) in &el.attributes {
            if !KNOWN_ATTRIBUTES.contains(&key.as_str()) {
                return Err(PluginError::invalid_arg(format!(
                    "<esx> of domain '{domain}' has an unknown attribute '{}' (known: {})",
                    key.escape_default(),
                    KNOWN_ATTRIBUTES.join(", ")
                )));
            }
        }
        let url = el.attribute("url").ok_or_else(|| {
            PluginError::invalid_arg(format!(
                "<esx> of domain '{domain}' has no url='https://HOST/sdk'"
            ))
        })?;
        let endpoint = Endpoint::parse(url)
            .map_err(|e| PluginError::invalid_arg(format!("<esx> of domain '{domain}': {e}")))?;
        let moid = el.attribute("moid").map(str::to_string);
        // A VM named neither way is the one named like the domain, as with libvirt's driver.
        let name = el
            .attribute("vm")
            .map(str::to_string)
            .or_else(|| moid.is_none().then(|| domain.clone()));
        let vm = VmSelector { name, moid };
        let tls = TlsOptions {
            ca_file: el.attribute("cacert").map(PathBuf::from),
            insecure: !yes_no(&domain, el, "verify", true)?,
        };
        let memory = yes_no(&domain, el, "memory", true)?;
        let quiesce = yes_no(&domain, el, "quiesce", false)?;
        // Last: the other mistakes are cheaper to report than a missing password.
        let credentials = resolve_credentials(&domain, el, env)?;
        Ok(EsxConfig {
            memory,
            quiesce,
            domain,
            endpoint,
            vm,
            credentials,
            tls,
        })
    }
}

const KNOWN_ATTRIBUTES: [&str; 9] = [
    "url",
    "vm",
    "moid",
    "user",
    "credentials",
    "cacert",
    "verify",
    "memory",
    "quiesce",
];

fn yes_no(domain: &str, el: &Element, name: &str, default: bool) -> PluginResult<bool> {
    match el.attribute(name) {
        None => Ok(default),
        Some("yes") => Ok(true),
        Some("no") => Ok(false),
        Some(other) => Err(PluginError::invalid_arg(format!(
            "<esx {name}='{}'> of domain '{domain}' is not 'yes' or 'no'",
            other.escape_default()
        ))),
    }
}

/// The user comes from `user='…'`, else the credentials file, else `$SNAPTREE_ESX_USER`;
/// the password from the credentials file when one is named, else `$SNAPTREE_ESX_PASSWORD`.
fn resolve_credentials(
    domain: &str,
    el: &Element,
    env: EnvLookup<'_>,
) -> PluginResult<Credentials> {
    let (file_user, file_password) = match el.attribute("credentials") {
        Some(path) => {
            let (u, p) = read_credentials_file(Path::new(path))?;
            if p.is_none() {
                return Err(PluginError::invalid_arg(format!(
                    "the credentials file {path} has no 'password=' line"
                )));
            }
            (u, p)
        }
        None => (None, None),
    };
    let user = el
        .attribute("user")
        .map(str::to_string)
        .or(file_user)
        .or_else(|| env(USER_ENV))
        .filter(|u| !u.is_empty());
    let user = user.ok_or_else(|| {
        PluginError::invalid_arg(format!(
            "no user name for the vSphere endpoint of domain '{domain}': give <esx user='…'>, a 'user=' line in the credentials file, or ${USER_ENV}"
        ))
    })?;
    let password = file_password
        .or_else(|| env(PASSWORD_ENV).map(Secret))
        .filter(|p| !p.0.is_empty());
    let password = password.ok_or_else(|| {
        PluginError::invalid_arg(format!(
            "no password for the vSphere endpoint of domain '{domain}': name a file with <esx credentials='FILE'> or set ${PASSWORD_ENV}"
        ))
    })?;
    Ok(Credentials { user, password })
}

/// Reads `user=NAME` and `password=SECRET` lines (blank lines and `#` comments allowed).
/// The file must not be readable by other users: it holds a password.
fn read_credentials_file(path: &Path) -> PluginResult<(Option<String>, Option<Secret>)> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            PluginError::invalid_arg(format!("cannot read the credentials file {shown}: {e}"))
        })?;
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(PluginError::invalid_arg(format!(
                "the credentials file {shown} is readable by every user; make it private first (chmod 600 {shown})"
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        PluginError::invalid_arg(format!("cannot read the credentials file {shown}: {e}"))
    })?;
    let (mut user, mut password) = (None, None);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The message names the line, never its content: it may be the password.
        let bad = || {
            PluginError::invalid_arg(format!(
                "line {} of the credentials file {shown} is not 'user=…' or 'password=…'",
                i + 1
            ))
        };
        let (key, value) = line.split_once('=').ok_or_else(bad)?;
        match key.trim() {
            "user" => user = Some(value.trim().to_string()),
            "password" => password = Some(Secret(value.trim().to_string())),
            _ => return Err(bad()),
        }
    }
    Ok((user, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(esx: &str, env: EnvLookup<'_>) -> PluginResult<EsxConfig> {
        EsxConfig::from_domain_xml(
            &format!("<domain type='esx'><name>web01</name>{esx}</domain>"),
            env,
        )
    }

    fn cred_file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        use std::os::unix::fs::PermissionsExt;
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn reads_the_element_and_a_credentials_file() {
        let f = cred_file("# vc\nuser = admin\npassword=s3cr=t\n", 0o600);
        let c = parse(
            &format!("<esx url='https://vc/sdk' moid='vm-42' credentials='{}' memory='no' quiesce='yes' verify='no'/>", f.path().display()),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.vm,
            VmSelector {
                name: None,
                moid: Some("vm-42".into())
            }
        );
        assert_eq!(c.credentials.user, "admin");
        assert_eq!(c.credentials.password.expose(), "s3cr=t");
        assert!(!c.memory && c.quiesce && c.tls.insecure);
        assert!(
            !format!("{c:?}").contains("s3cr"),
            "Debug must not show the password"
        );
    }

    #[test]
    fn falls_back_to_the_domain_name_and_the_environment() {
        let env = |k: &str| match k {
            USER_ENV => Some("envuser".to_string()),
            PASSWORD_ENV => Some("envpass".to_string()),
            _ => None,
        };
        let c = parse("<esx url='http://127.0.0.1:8989/sdk'/>", &env).unwrap();
        assert_eq!(c.vm.name.as_deref(), Some("web01"));
        assert_eq!(
            (c.credentials.user.as_str(), c.credentials.password.expose()),
            ("envuser", "envpass")
        );
        assert!(c.memory && !c.quiesce && !c.tls.insecure);
        let c = parse("<esx url='http://h/sdk' user='u'/>", &env).unwrap();
        assert_eq!(c.credentials.user, "u");
    }

    #[test]
    fn refuses_what_it_cannot_use_without_showing_secrets() {
        let e = parse("<esx url='http://h/sdk'/>", &no_env).unwrap_err();
        assert!(e.message().contains(USER_ENV), "{e}");
        let e = parse("<esx url='http://h/sdk' user='u'/>", &no_env).unwrap_err();
        assert!(e.message().contains(PASSWORD_ENV), "{e}");
        assert!(
            parse("", &no_env)
                .unwrap_err()
                .message()
                .contains("no <esx")
        );
        assert!(
            parse("<esx url='http://h/sdk' colour='red'/>", &no_env)
                .unwrap_err()
                .message()
                .contains("colour")
        );
        assert!(
            parse("<esx url='http://h/sdk' memory='maybe'/>", &no_env)
                .unwrap_err()
                .message()
                .contains("memory")
        );
        let open = cred_file("user=u\npassword=hunter2\n", 0o644);
        let e = parse(
            &format!(
                "<esx url='http://h/sdk' credentials='{}'/>",
                open.path().display()
            ),
            &no_env,
        )
        .unwrap_err();
        assert!(e.message().contains("chmod 600"), "{e}");
        let bad = cred_file("user=u\nhunter2\n", 0o600);
        let e = parse(
            &format!(
                "<esx url='http://h/sdk' credentials='{}'/>",
                bad.path().display()
            ),
            &no_env,
        )
        .unwrap_err();
        assert!(
            e.message().contains("line 2") && !e.message().contains("hunter2"),
            "{e}"
        );
        let e = parse("<esx url='https://root:hunter2@h/sdk' user='u'/>", &no_env).unwrap_err();
        assert!(!e.message().contains("hunter2"), "{e}");
    }
}
