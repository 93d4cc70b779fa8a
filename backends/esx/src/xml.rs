//! vSphere's SOAP replies, read by the engine's hardened reader (`snaptree_engine::xml::dom`:
//! no DOCTYPE and so no entity definitions, only the five predefined entities, no control
//! characters, a size and a nesting limit) with the reply's own settings: elements are
//! matched by local name, because prefixes differ between servers (vcsim writes
//! `XMLSchema-instance:type` where ESX writes `xsi:type`), and the limits are larger than
//! for snaptree's own documents. The lookups a reply needs are [`SoapElement`].

use snaptree_engine::xml::dom::{self, Document, ElementNames, Limits, ReadOptions};

pub use snaptree_engine::xml::dom::Element;

/// The largest reply accepted, in bytes. A vCenter with many thousands of VMs answers the
/// VM-name lookup with a few MiB; anything near this limit is not a vSphere reply.
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// The deepest nesting accepted. A snapshot tree nests one `childSnapshotList` per level
/// and vSphere allows chains of 32 (more with retired layers), so this is generous.
const MAX_DEPTH: usize = 512;

/// How a reply is read: local names, [`MAX_REPLY_BYTES`] and [`MAX_DEPTH`].
pub const REPLY: ReadOptions = ReadOptions {
    limits: Limits {
        max_bytes: MAX_REPLY_BYTES,
        max_depth: MAX_DEPTH,
    },
    names: ElementNames::Local,
};

/// The lookups a SOAP reply needs, by local name. The first match wins: a reply is the
/// server's, not a document a user wrote, so a repeated element is not refused here.
pub trait SoapElement {
    /// The first child with this local name.
    fn child(&self, name: &str) -> Option<&Element>;

    /// The descendant reached by following children with these local names.
    fn path(&self, names: &[&str]) -> Option<&Element>;

    /// The text of the first child with this local name.
    fn child_text(&self, name: &str) -> Option<&str>;

    /// The `xsi:type` of the element, under whatever prefix the server chose, without the
    /// type's own prefix (`xsd:string` gives `string`).
    fn xsi_type(&self) -> Option<&str>;
}

impl SoapElement for Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |node, name| node.child(name))
    }

    fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    fn xsi_type(&self) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| {
                k.rsplit_once(':')
                    .is_some_and(|(prefix, local)| local == "type" && prefix != "xmlns")
            })
            .map(|(_, v)| v.rsplit_once(':').map_or(v.as_str(), |(_, local)| local))
    }
}

/// Parses a reply into its root element; the error is a sentence with its line and column.
pub fn parse(source: &str) -> Result<Element, String> {
    Document::parse_with(source, REPLY)
        .map(|doc| doc.root)
        .map_err(|e| e.to_string())
}

/// Escapes text for element content and attribute values of a request. A character the
/// reader refuses cannot be carried in XML 1.0, even as a reference: it is replaced rather
/// than sent in a request the server must refuse.
pub fn escape(text: &str) -> String {
    let carried: String = text
        .chars()
        .map(|c| {
            if dom::is_refused_char(c) {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    dom::escape(&carried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_local_names_and_xsi_types_under_any_prefix() {
        let reply = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="e"><soapenv:Body>
            <R xmlns="urn:vim25"><returnval><val xmlns:X="i" X:type="xsd:string">a &amp; b&#33;</val>
            <obj type="VirtualMachine">vm-1</obj></returnval></R></soapenv:Body></soapenv:Envelope>"#;
        let root = parse(reply).unwrap();
        assert_eq!(root.name, "Envelope");
        let rv = root.path(&["Body", "R", "returnval"]).unwrap();
        assert_eq!(rv.child("val").unwrap().xsi_type(), Some("string"));
        assert_eq!(rv.child_text("val"), Some("a & b!"));
        let obj = rv.child("obj").unwrap();
        assert_eq!(obj.attribute("type"), Some("VirtualMachine"));
        assert_eq!(
            obj.xsi_type(),
            None,
            "a moref's own type is not an xsi:type"
        );
    }

    #[test]
    fn refuses_doctype_entities_and_garbage() {
        assert!(
            parse("<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")
                .unwrap_err()
                .contains("DOCTYPE")
        );
        assert!(
            parse("<x>&a;</x>")
                .unwrap_err()
                .contains("undefined entity")
        );
        assert!(parse("<x><y></x>").is_err());
        assert!(parse("").unwrap_err().contains("no root"));
        assert!(parse("<x/><y/>").unwrap_err().contains("after the root"));
    }

    #[test]
    fn refuses_deep_nesting_without_recursion() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn escape_round_trips_through_parse() {
        let text = "<&>\"' snap\u{1}";
        let doc = format!("<x a=\"{}\">{}</x>", escape(text), escape(text));
        let node = parse(&doc).unwrap();
        assert_eq!(node.text, "<&>\"' snap\u{fffd}");
        assert_eq!(node.attribute("a"), Some("<&>\"' snap\u{fffd}"));
    }

    #[test]
    fn replies_larger_and_deeper_than_snapshot_xml_are_read() {
        // A VM-name lookup of a large vCenter is MiB, and a snapshot tree of a long chain
        // nests deeper than snaptree's own documents may: both within the reply limits.
        let names = "<name>vm</name>".repeat(dom::MAX_DOCUMENT_BYTES / 15 + 1);
        let big = format!("<x:Envelope xmlns:x='e'><x:Body>{names}</x:Body></x:Envelope>");
        assert!(big.len() > dom::MAX_DOCUMENT_BYTES);
        let root = parse(&big).unwrap();
        assert_eq!(
            root.child("Body").unwrap().children.len(),
            dom::MAX_DOCUMENT_BYTES / 15 + 1
        );
        let levels = dom::MAX_DEPTH * 2;
        let deep = format!(
            "{}{}",
            "<childSnapshotList>".repeat(levels),
            "</childSnapshotList>".repeat(levels)
        );
        let mut node = &parse(&deep).unwrap();
        let mut depth = 1;
        while let Some(child) = node.child("childSnapshotList") {
            (node, depth) = (child, depth + 1);
        }
        assert_eq!(depth, levels);
        let over = format!("<x>{}</x>", " ".repeat(MAX_REPLY_BYTES));
        assert!(parse(&over).unwrap_err().contains("more than the limit"));
    }

    #[test]
    fn refuses_control_characters_and_escape_keeps_carriage_returns() {
        assert!(
            parse("<x>a&#1;b</x>")
                .unwrap_err()
                .contains("control character U+0001")
        );
        let doc = format!("<x>{}</x>", escape("a\r\nb\u{7f}"));
        assert_eq!(parse(&doc).unwrap().text, "a\r\nb\u{fffd}");
    }
}
