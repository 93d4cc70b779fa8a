//! A small, defensive element tree read with quick-xml.
//!
//! Snapshot and domain documents are tiny, so they are read into a tree first and
//! interpreted second. Everything hostile is refused here, once, for both document kinds:
//! a DOCTYPE (and so every entity definition), unknown entity references, documents over
//! [`MAX_DOCUMENT_BYTES`], nesting deeper than [`MAX_DEPTH`].

use quick_xml::events::{BytesStart, Event};

use crate::error::{Error, Result};

/// The largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// The deepest element nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// One element: its name, attributes, text and child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// The qualified name as written.
    pub name: String,
    /// Attributes in document order, values unescaped.
    pub attributes: Vec<(String, String)>,
    /// The concatenated text directly inside this element, unescaped.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Byte offset of the start tag, for error positions.
    pub offset: u64,
}

impl Element {
    /// The value of an attribute.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every child element with this name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// A parsed document: its root element and the source, kept for error positions.
#[derive(Debug)]
pub struct Document<'a> {
    /// The root element.
    pub root: Element,
    source: &'a str,
}

impl<'a> Document<'a> {
    /// Parses `source`, refusing what the module documentation lists.
    pub fn parse(source: &'a str) -> Result<Document<'a>> {
        if source.len() > MAX_DOCUMENT_BYTES {
            return Err(Error::Xml {
                message: format!(
                    "document is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES}",
                    source.len()
                ),
                line: 1,
                column: 1,
            });
        }
        let root = read_tree(source)?;
        Ok(Document { root, source })
    }

    /// An XML error located at byte `offset` of the source.
    pub fn error_at(&self, offset: u64, message: impl Into<String>) -> Error {
        xml_error(self.source, offset, message)
    }
}

fn xml_error(source: &str, offset: u64, message: impl Into<String>) -> Error {
    let (line, column) = line_column(source, offset as usize);
    Error::Xml {
        message: message.into(),
        line,
        column,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (u64, u64) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() as u64 + 1;
    (line, column)
}

fn read_tree(source: &str) -> Result<Element> {
    let mut reader = quick_xml::Reader::from_str(source);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let offset = reader.buffer_position();
        let event = reader.read_event().map_err(|e| {
            xml_error(
                source,
                reader.error_position(),
                format!("malformed XML: {e}"),
            )
        })?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(xml_error(source, offset, "content after the root element"));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(xml_error(
                        source,
                        offset,
                        format!("elements nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                stack.push(element(source, &start, offset)?);
            }
            Event::Empty(start) => {
                let el = element(source, &start, offset)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack
                    .pop()
                    .ok_or_else(|| xml_error(source, offset, "unexpected end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(text) => {
                let content = text.xml10_content();
                check_chars(source, offset, &content)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(xml_error(source, offset, "text outside the root element")),
                }
            }
            Event::CData(data) => {
                let content = data.xml10_content();
                check_chars(source, offset, &content)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&content),
                    None => {
                        return Err(xml_error(source, offset, "CDATA outside the root element"));
                    }
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match predefined_entity(&reference.xml10_content()) {
                        Some(s) => s.to_string(),
                        None => {
                            return Err(xml_error(
                                source,
                                offset,
                                format!(
                                    "undefined entity '&{};' (snaptree expands no entities)",
                                    reference.xml10_content().escape_default()
                                ),
                            ));
                        }
                    },
                    Err(e) => {
                        return Err(xml_error(
                            source,
                            offset,
                            format!("bad character reference: {e}"),
                        ));
                    }
                };
                check_chars(source, offset, &resolved)?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&resolved),
                    None => {
                        return Err(xml_error(
                            source,
                            offset,
                            "reference outside the root element",
                        ));
                    }
                }
            }
            Event::DocType(_) => {
                return Err(xml_error(
                    source,
                    offset,
                    "DOCTYPE declarations are refused (they can define entities)",
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(xml_error(
            source,
            source.len() as u64,
            format!("element <{}> is not closed", open.name),
        ));
    }
    root.ok_or_else(|| xml_error(source, 0, "document has no root element"))
}

/// XML 1.0 allows no control characters but tab, line feed and carriage return, not even
/// through a character reference; quick-xml does not check, so this does.
fn check_chars(source: &str, offset: u64, text: &str) -> Result<()> {
    match text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{80}'..='\u{9f}'))
    {
        None => Ok(()),
        Some(c) => Err(xml_error(
            source,
            offset,
            format!(
                "the control character U+{:04X} is not allowed in XML",
                c as u32
            ),
        )),
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

fn element(source: &str, start: &BytesStart<'_>, offset: u64) -> Result<Element> {
    let name = start.name().as_ref().to_string();
    let mut attributes = Vec::new();
    for attr in start.attributes() {
        let attr =
            attr.map_err(|e| xml_error(source, offset, format!("bad attribute in <{name}>: {e}")))?;
        let key = attr.key.as_ref().to_string();
        if attributes.iter().any(|(k, _)| *k == key) {
            return Err(xml_error(
                source,
                offset,
                format!("attribute '{key}' repeated in <{name}>"),
            ));
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| {
                xml_error(
                    source,
                    offset,
                    format!("bad value of attribute '{key}' in <{name}>: {e}"),
                )
            })?;
        check_chars(source, offset, &value)?;
        attributes.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attributes,
        text: String::new(),
        children: Vec::new(),
        offset,
    })
}

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // A raw carriage return would be read back as a line feed.
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(source: &str) -> String {
        match Document::parse(source) {
            Ok(d) => panic!("expected {source:?} refused, got {:?}", d.root),
            Err(e) => {
                assert_eq!(e.code(), crate::ErrorCode::XmlError, "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn reads_nested_elements_text_and_attributes() {
        let d = Document::parse(
            "<?xml version='1.0'?>\n<a x='1&amp;2'><b>t&lt;u&#65;</b><c/><!-- c --></a>",
        )
        .unwrap();
        assert_eq!(d.root.name, "a");
        assert_eq!(d.root.attribute("x"), Some("1&2"));
        assert_eq!(d.root.children[0].text, "t<uA");
        assert_eq!(d.root.children[1].name, "c");
    }

    #[test]
    fn refuses_control_characters_and_keeps_carriage_returns() {
        for doc in [
            "<a>x\u{2}y</a>",
            "<a>&#1;</a>",
            "<a v='\u{1c}'/>",
            "<a><![CDATA[\u{7}]]></a>",
        ] {
            assert!(err(doc).contains("control character"), "{doc:?}");
        }
        let text = "a\rb\tc\nd";
        let doc = format!("<a>{}</a>", escape(text));
        let d = Document::parse(&doc).unwrap();
        assert_eq!(
            d.root.text, text,
            "expected a carriage return to survive escape and parse"
        );
    }

    #[test]
    fn refuses_doctype_and_entities() {
        assert!(err("<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>").contains("DOCTYPE"));
        assert!(err("<a>&e;</a>").contains("undefined entity '&e;'"));
        assert!(err("<!DOCTYPE a SYSTEM 'file:///etc/passwd'><a/>").contains("DOCTYPE"));
    }

    #[test]
    fn reports_line_and_column() {
        let e = Document::parse("<a>\n  <b></c>\n</a>").unwrap_err();
        match e {
            Error::Xml { line, .. } => assert_eq!(line, 2, "expected the error on line 2: {e}"),
            other => panic!("expected an XML error, got {other}"),
        }
    }

    #[test]
    fn refuses_size_depth_and_structure_problems() {
        let big = format!("<a>{}</a>", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(err(&big).contains("more than the limit"));
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(err(&deep).contains("nested deeper"));
        assert!(err("").contains("no root element"));
        assert!(err("<a/><b/>").contains("after the root"));
        assert!(err("<a>").contains("not closed"));
        assert!(err("<a x='1' x='2'/>").contains("attribute"));
        assert!(err("text<a/>").contains("outside the root"));
    }
}
