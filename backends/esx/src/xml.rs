//! A small element tree for vSphere's SOAP replies, read with quick-xml.
//!
//! Replies are matched by local name, because prefixes differ between servers (vcsim
//! writes `XMLSchema-instance:type` where ESX writes `xsi:type`). A reply comes from the
//! network, so it is read defensively: no DOCTYPE (and so no entity definitions), only the
//! five predefined entities, a size and a nesting limit.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};

/// The largest reply accepted, in bytes. A vCenter with many thousands of VMs answers the
/// VM-name lookup with a few MiB; anything near this limit is not a vSphere reply.
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// The deepest nesting accepted. A snapshot tree nests one `childSnapshotList` per level
/// and vSphere allows chains of 32 (more with retired layers), so this is generous.
const MAX_DEPTH: usize = 512;

/// One element: its local name, its attributes (qualified names), its text and children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// The local name (without prefix).
    pub name: String,
    /// Attributes in document order, with qualified names, values unescaped.
    pub attributes: Vec<(String, String)>,
    /// The text directly inside the element, unescaped.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Node>,
}

impl Node {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The descendant reached by following children with these local names.
    pub fn path(&self, names: &[&str]) -> Option<&Node> {
        names.iter().try_fold(self, |node, name| node.child(name))
    }

    /// The text of the first child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// An attribute by its qualified name as written (`type` of a managed object reference).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `xsi:type` of the element, under whatever prefix the server chose, without the
    /// type's own prefix (`xsd:string` gives `string`).
    pub fn xsi_type(&self) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| {
                k.rsplit_once(':')
                    .is_some_and(|(prefix, local)| local == "type" && prefix != "xmlns")
            })
            .map(|(_, v)| v.rsplit_once(':').map_or(v.as_str(), |(_, local)| local))
    }
}

/// Parses a reply into its root element.
pub fn parse(source: &str) -> Result<Node, String> {
    if source.len() > MAX_REPLY_BYTES {
        return Err(format!(
            "the reply is {} bytes, more than the limit of {MAX_REPLY_BYTES}",
            source.len()
        ));
    }
    let mut reader = quick_xml::Reader::from_str(source);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err("content after the root element".into());
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH} levels"));
                }
                stack.push(element(&start)?);
            }
            Event::Empty(start) => attach(&mut stack, &mut root, element(&start)?),
            Event::End(_) => {
                let node = stack.pop().ok_or("unexpected end tag")?;
                attach(&mut stack, &mut root, node);
            }
            Event::Text(text) => push_text(&mut stack, &text.xml10_content())?,
            Event::CData(data) => push_text(&mut stack, &data.xml10_content())?,
            Event::GeneralRef(reference) => {
                let resolved: Cow<'_, str> = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string().into(),
                    Ok(None) => predefined_entity(&reference.xml10_content())
                        .ok_or_else(|| {
                            format!(
                                "undefined entity '&{};'",
                                reference.xml10_content().escape_default()
                            )
                        })?
                        .into(),
                    Err(e) => return Err(format!("bad character reference: {e}")),
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::DocType(_) => {
                return Err("the reply has a DOCTYPE declaration, which is refused".into());
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("element <{}> is not closed", open.name));
    }
    root.ok_or_else(|| "the reply has no root element".into())
}

fn attach(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn push_text(stack: &mut [Node], text: &str) -> Result<(), String> {
    match stack.last_mut() {
        Some(node) => {
            node.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err("text outside the root element".into()),
    }
}

fn predefined_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        _ => return None,
    })
}

fn element(start: &BytesStart<'_>) -> Result<Node, String> {
    let name = start.local_name().into_inner().to_string();
    let mut attributes = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("bad attribute in <{name}>: {e}"))?;
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("bad attribute value in <{name}>: {e}"))?;
        attributes.push((attr.key.as_ref().to_string(), value.into_owned()));
    }
    Ok(Node {
        name,
        attributes,
        text: String::new(),
        children: Vec::new(),
    })
}

/// Escapes text for element content and attribute values of a request.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even as references: replace
            // them rather than send a request the server must refuse.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
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
}
