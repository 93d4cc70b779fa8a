//! `<domainsnapshot>` documents, both directions.

use uuid::Uuid;

use super::dom::{Document, Element, escape};
use crate::error::{Error, Result};
use crate::model::PowerState;
use crate::name::validate_name;

/// What a `<domainsnapshot>` document says. Every field is optional in a document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotXml {
    /// `<name>`.
    pub name: Option<String>,
    /// `<uuid>`.
    pub uuid: Option<Uuid>,
    /// `<description>`.
    pub description: Option<String>,
    /// `<creationdate>` (or libvirt's `<creationTime>`), Unix seconds.
    pub creation_date: Option<i64>,
    /// `<state>`.
    pub state: Option<PowerState>,
    /// `<domain><uuid>`.
    pub domain_uuid: Option<Uuid>,
    /// `<parent><name>`.
    pub parent_name: Option<String>,
    /// `<parent><uuid>`.
    pub parent_uuid: Option<Uuid>,
    /// `<expires>`, Unix seconds: a snaptree extension (SEMANTICS.md §7.5) that libvirt
    /// ignores.
    pub expires: Option<i64>,
}

impl SnapshotXml {
    /// Reads the fields a create takes: name, uuid, description and `<expires>`
    /// (SEMANTICS.md §7.5). Every other element is ignored, whatever it holds (libvirt's `state` of `disk-snapshot`, `memory`,
    /// `disks`, a whole `<domain>`), as SEMANTICS.md §2 says.
    pub fn parse_for_create(source: &str) -> Result<SnapshotXml> {
        let doc = Document::parse(source)?;
        let root = snapshot_root(&doc)?;
        Ok(SnapshotXml {
            name: name_field(&doc, root)?,
            uuid: uuid_field(&doc, root, "uuid")?,
            description: single_text(&doc, root, "description")?,
            expires: expires_field(&doc, root)?,
            ..SnapshotXml::default()
        })
    }

    /// Reads every field snaptree knows and validates each, as for a round trip of
    /// snaptree's own output. `<state>` must be one of snaptree's three power states.
    pub fn parse(source: &str) -> Result<SnapshotXml> {
        SnapshotXml::parse_with(source, PowerState::parse)
    }

    /// Reads a document for REDEFINE (SEMANTICS.md §7.3): every field [`SnapshotXml::parse`]
    /// reads, with `<state>` also in libvirt's words, mapped by [`libvirt_state`]. Every
    /// element snaptree does not model (libvirt's `memory`, `disks`, `active`, the whole
    /// inner `<domain>` but its `<uuid>`, any extension) is ignored: it describes the
    /// hypervisor's own bookkeeping, which snaptree's backends keep themselves.
    pub fn parse_for_redefine(source: &str) -> Result<SnapshotXml> {
        SnapshotXml::parse_with(source, libvirt_state)
    }

    fn parse_with(source: &str, state_of: fn(&str) -> Result<PowerState>) -> Result<SnapshotXml> {
        let doc = Document::parse(source)?;
        let root = snapshot_root(&doc)?;
        let creation = match (
            single(&doc, root, "creationdate")?,
            single(&doc, root, "creationTime")?,
        ) {
            (Some(a), Some(_)) => {
                return Err(
                    doc.error_at(a.offset, "both <creationdate> and <creationTime> are given")
                );
            }
            (Some(e), None) | (None, Some(e)) => Some(parse_date(&doc, e)?),
            (None, None) => None,
        };
        let state = match single(&doc, root, "state")? {
            Some(e) => {
                Some(state_of(&e.text).map_err(|err| doc.error_at(e.offset, err.to_string()))?)
            }
            None => None,
        };
        let (domain_uuid, parent_name, parent_uuid) = {
            let domain = single(&doc, root, "domain")?;
            let parent = single(&doc, root, "parent")?;
            (
                match domain {
                    Some(d) => uuid_field(&doc, d, "uuid")?,
                    None => None,
                },
                match parent {
                    Some(p) => name_field(&doc, p)?,
                    None => None,
                },
                match parent {
                    Some(p) => uuid_field(&doc, p, "uuid")?,
                    None => None,
                },
            )
        };
        Ok(SnapshotXml {
            name: name_field(&doc, root)?,
            uuid: uuid_field(&doc, root, "uuid")?,
            description: single_text(&doc, root, "description")?,
            creation_date: creation,
            state,
            domain_uuid,
            parent_name,
            parent_uuid,
            expires: expires_field(&doc, root)?,
        })
    }

    /// Writes the document in snaptree's canonical form; [`SnapshotXml::parse`] reads it
    /// back to an equal value.
    pub fn format(&self) -> String {
        let mut out = String::from("<domainsnapshot>\n");
        if let Some(name) = &self.name {
            out.push_str(&format!("  <name>{}</name>\n", escape(name)));
        }
        if let Some(uuid) = &self.uuid {
            out.push_str(&format!("  <uuid>{uuid}</uuid>\n"));
        }
        if let Some(d) = &self.description {
            out.push_str(&format!("  <description>{}</description>\n", escape(d)));
        }
        if let Some(state) = self.state {
            out.push_str(&format!("  <state>{state}</state>\n"));
        }
        if let Some(date) = self.creation_date {
            out.push_str(&format!("  <creationdate>{date}</creationdate>\n"));
        }
        if let Some(expires) = self.expires {
            out.push_str(&format!("  <expires>{expires}</expires>\n"));
        }
        if self.parent_name.is_some() || self.parent_uuid.is_some() {
            out.push_str("  <parent>\n");
            if let Some(name) = &self.parent_name {
                out.push_str(&format!("    <name>{}</name>\n", escape(name)));
            }
            if let Some(uuid) = &self.parent_uuid {
                out.push_str(&format!("    <uuid>{uuid}</uuid>\n"));
            }
            out.push_str("  </parent>\n");
        }
        if let Some(uuid) = &self.domain_uuid {
            out.push_str(&format!(
                "  <domain>\n    <uuid>{uuid}</uuid>\n  </domain>\n"
            ));
        }
        out.push_str("</domainsnapshot>\n");
        out
    }
}

/// A snapshot's `<state>` in libvirt's words (`virDomainSnapshotState`) or snaptree's, as
/// one of snaptree's power states: what a revert to the snapshot resumes. `running` and
/// `blocked` (a running guest waiting on a resource) are running; `paused` and
/// `pmsuspended` are paused; `shutoff`, `shutdown`, `crashed`, `nostate` and
/// `disk-snapshot` (disks only, no memory to resume) are shut off.
pub fn libvirt_state(text: &str) -> Result<PowerState> {
    let word = text.trim().to_ascii_lowercase();
    match word.as_str() {
        "running" | "blocked" => Ok(PowerState::Running),
        "paused" | "pmsuspended" => Ok(PowerState::Paused),
        "shutoff" | "shutdown" | "crashed" | "nostate" | "disk-snapshot" => Ok(PowerState::Shutoff),
        _ => Err(Error::InvalidArg(format!(
            "unknown snapshot state '{}': expected one of libvirt's running, blocked, paused, \
             pmsuspended, shutoff, shutdown, crashed, nostate or disk-snapshot",
            text.escape_default()
        ))),
    }
}

fn snapshot_root<'d>(doc: &'d Document<'_>) -> Result<&'d Element> {
    if doc.root.name != "domainsnapshot" {
        return Err(doc.error_at(
            doc.root.offset,
            format!(
                "root element is <{}>, expected <domainsnapshot>",
                doc.root.name
            ),
        ));
    }
    Ok(&doc.root)
}

/// The one child called `name`, refusing a second one rather than letting the first win.
pub(crate) fn single<'e>(
    doc: &Document<'_>,
    parent: &'e Element,
    name: &'e str,
) -> Result<Option<&'e Element>> {
    let mut found = parent.children_named(name);
    let first = found.next();
    if let Some(second) = found.next() {
        return Err(doc.error_at(
            second.offset,
            format!("<{name}> appears twice in <{}>", parent.name),
        ));
    }
    Ok(first)
}

pub(crate) fn single_text(
    doc: &Document<'_>,
    parent: &Element,
    name: &str,
) -> Result<Option<String>> {
    Ok(single(doc, parent, name)?.map(|e| e.text.clone()))
}

pub(crate) fn name_field(doc: &Document<'_>, parent: &Element) -> Result<Option<String>> {
    match single(doc, parent, "name")? {
        None => Ok(None),
        Some(e) => {
            validate_name("snapshot", &e.text)
                .map_err(|err| doc.error_at(e.offset, err.to_string()))?;
            Ok(Some(e.text.clone()))
        }
    }
}

pub(crate) fn uuid_field(doc: &Document<'_>, parent: &Element, name: &str) -> Result<Option<Uuid>> {
    match single(doc, parent, name)? {
        None => Ok(None),
        Some(e) => parse_uuid(e.text.trim())
            .map(Some)
            .map_err(|err| doc.error_at(e.offset, err.to_string())),
    }
}

/// Parses a uuid in its hyphenated 36-character form (or 32 hex digits, as libvirt also
/// accepts).
pub fn parse_uuid(text: &str) -> Result<Uuid> {
    let ok_shape = text.len() == 36 || text.len() == 32;
    match Uuid::try_parse(text) {
        Ok(u) if ok_shape => Ok(u),
        _ => Err(Error::InvalidArg(format!(
            "'{}' is not a valid uuid",
            text.escape_default()
        ))),
    }
}

/// `<expires>`, Unix seconds, if given.
fn expires_field(doc: &Document<'_>, root: &Element) -> Result<Option<i64>> {
    single(doc, root, "expires")?
        .map(|e| parse_date(doc, e))
        .transpose()
}

fn parse_date(doc: &Document<'_>, e: &Element) -> Result<i64> {
    let text = e.text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(doc.error_at(
            e.offset,
            format!(
                "<{}> '{}' is not a non-negative number of seconds",
                e.name,
                text.escape_default()
            ),
        ));
    }
    text.parse::<i64>()
        .map_err(|_| doc.error_at(e.offset, format!("<{}> '{text}' is too large", e.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_snaptree_output_back() {
        let value = SnapshotXml {
            name: Some("a & <b>".into()),
            uuid: Some(Uuid::new_v4()),
            description: Some("line\n'two'".into()),
            creation_date: Some(1_272_917_631),
            state: Some(PowerState::Paused),
            domain_uuid: Some(Uuid::new_v4()),
            parent_name: Some("p".into()),
            parent_uuid: Some(Uuid::new_v4()),
            expires: Some(1_800_000_000),
        };
        let text = value.format();
        let back = SnapshotXml::parse(&text).unwrap();
        assert_eq!(
            back, value,
            "expected the formatted document to parse back equal:\n{text}"
        );
        assert_eq!(
            back.format(),
            text,
            "expected format(parse(x)) to be stable"
        );
    }

    #[test]
    fn empty_document_is_valid() {
        assert_eq!(
            SnapshotXml::parse_for_create("<domainsnapshot/>").unwrap(),
            SnapshotXml::default()
        );
    }

    #[test]
    fn accepts_libvirt_aliases_and_any_case() {
        let x = SnapshotXml::parse(
            "<domainsnapshot><creationTime>5</creationTime><state>RUNNING</state></domainsnapshot>",
        )
        .unwrap();
        assert_eq!(x.creation_date, Some(5));
        assert_eq!(x.state, Some(PowerState::Running));
    }

    fn refused(source: &str, full: bool) -> String {
        let r = if full {
            SnapshotXml::parse(source)
        } else {
            SnapshotXml::parse_for_create(source)
        };
        let e = r.expect_err(source);
        assert_eq!(e.code(), crate::ErrorCode::XmlError, "{source}: {e}");
        e.to_string()
    }

    #[test]
    fn refuses_each_bad_field_with_its_reason() {
        assert!(refused("<domain/>", false).contains("expected <domainsnapshot>"));
        assert!(
            refused(
                "<domainsnapshot><name>a</name><name>b</name></domainsnapshot>",
                false
            )
            .contains("<name> appears twice")
        );
        assert!(
            refused("<domainsnapshot><uuid>nope</uuid></domainsnapshot>", false)
                .contains("not a valid uuid")
        );
        assert!(
            refused("<domainsnapshot><name>../x</name></domainsnapshot>", false)
                .contains("contains '/'")
        );
        assert!(
            refused("<domainsnapshot><name> </name></domainsnapshot>", false)
                .contains("white space")
        );
        assert!(
            refused(
                "<domainsnapshot><state>asleep</state></domainsnapshot>",
                true
            )
            .contains("unknown power state")
        );
        assert!(
            refused(
                "<domainsnapshot><creationdate>-1</creationdate></domainsnapshot>",
                true
            )
            .contains("non-negative")
        );
        assert!(refused("<domainsnapshot><creationdate>99999999999999999999</creationdate></domainsnapshot>", true)
            .contains("too large"));
        assert!(refused(
            "<domainsnapshot><creationdate>1</creationdate><creationTime>1</creationTime></domainsnapshot>",
            true
        )
        .contains("both"));
    }

    #[test]
    fn redefine_reads_libvirt_states_and_ignores_what_snaptree_does_not_model() {
        let x = SnapshotXml::parse_for_redefine(
            "<domainsnapshot><name>n</name><state>disk-snapshot</state>\
             <creationTime>7</creationTime><memory snapshot='no'/><disks><disk name='vda'/></disks>\
             <domain type='kvm'><name>d</name><uuid>9d37b878-a7cc-9f9a-b78f-49b3abad25a8</uuid>\
             <devices/></domain><active>1</active><x:ext xmlns:x='urn:x'>y</x:ext></domainsnapshot>",
        )
        .unwrap();
        assert_eq!(x.state, Some(PowerState::Shutoff));
        assert_eq!(x.creation_date, Some(7));
        assert_eq!(
            x.domain_uuid.map(|u| u.to_string()).as_deref(),
            Some("9d37b878-a7cc-9f9a-b78f-49b3abad25a8")
        );
        for (word, state) in [
            ("blocked", PowerState::Running),
            ("pmsuspended", PowerState::Paused),
            ("Shutdown", PowerState::Shutoff),
            ("crashed", PowerState::Shutoff),
            ("nostate", PowerState::Shutoff),
        ] {
            assert_eq!(libvirt_state(word).unwrap(), state, "{word}");
        }
        assert!(
            SnapshotXml::parse("<domainsnapshot><state>blocked</state></domainsnapshot>").is_err(),
            "the strict reader keeps snaptree's three states"
        );
        let e = SnapshotXml::parse_for_redefine(
            "<domainsnapshot><state>asleep</state></domainsnapshot>",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("unknown snapshot state 'asleep'"),
            "{e}"
        );
    }

    #[test]
    fn create_ignores_everything_but_name_uuid_description() {
        let x = SnapshotXml::parse_for_create(
            "<domainsnapshot><name>n</name><state>disk-snapshot</state><memory snapshot='no'/>\
             <domain><name>d</name><uuid>x</uuid></domain></domainsnapshot>",
        )
        .unwrap();
        assert_eq!(x.name.as_deref(), Some("n"));
        assert_eq!(x.state, None);
    }

    #[test]
    fn create_reads_expires_and_refuses_a_bad_one() {
        let x = SnapshotXml::parse_for_create(
            "<domainsnapshot><name>n</name><expires>1800000000</expires></domainsnapshot>",
        )
        .unwrap();
        assert_eq!(x.expires, Some(1_800_000_000));
        let e = SnapshotXml::parse_for_create(
            "<domainsnapshot><expires>tomorrow</expires></domainsnapshot>",
        )
        .unwrap_err();
        assert!(e.to_string().contains("<expires> 'tomorrow'"), "{e}");
    }
}
