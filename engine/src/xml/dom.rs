//! A small, defensive element tree read with quick-xml.
//!
//! Snapshot and domain documents are tiny, so they are read into a tree first and
//! interpreted second. Everything hostile is refused here, once, for every document
//! snaptree reads (snapshot and domain XML, and the ESX backend's SOAP replies): a DOCTYPE
//! (and so every entity definition), unknown entity references, control characters,
//! documents over a size limit and nesting deeper than a depth limit ([`Limits`]; snaptree's
//! own documents get [`Limits::DOCUMENT`]). [`ReadOptions`] also says whether element names
//! keep their namespace prefix or are read by local name, as a SOAP reply needs: servers
//! choose their own prefixes.

use quick_xml::events::{BytesStart, Event};

use crate::error::{Error, Result};

/// The largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// The deepest element nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// How much a reader accepts before it refuses a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest document accepted, in bytes.
    pub max_bytes: usize,
    /// The deepest element nesting accepted.
    pub max_depth: usize,
}

impl Limits {
    /// The limits of snaptree's own documents: [`MAX_DOCUMENT_BYTES`] and [`MAX_DEPTH`].
    pub const DOCUMENT: Limits = Limits {
        max_bytes: MAX_DOCUMENT_BYTES,
        max_depth: MAX_DEPTH,
    };
}

/// How an element's name is recorded in [`Element::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementNames {
    /// The qualified name as written (`s:Envelope`).
    Qualified,
    /// The local name, the namespace prefix dropped (`Envelope`). Attribute names stay
    /// qualified either way.
    Local,
}

/// How a document is read: its limits and how element names are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// What is refused as too large or too deep.
    pub limits: Limits,
    /// Qualified or local element names.
    pub names: ElementNames,
}

impl ReadOptions {
    /// snaptree's snapshot and domain documents: [`Limits::DOCUMENT`], qualified names.
    pub const DOCUMENT: ReadOptions = ReadOptions {
        limits: Limits::DOCUMENT,
        names: ElementNames::Qualified,
    };
}

/// One element: its name, attributes, text and child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// The name: qualified as written, or local ([`ElementNames`]).
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
    /// Parses one of snaptree's own documents ([`ReadOptions::DOCUMENT`]), refusing what
    /// the module documentation lists.
    pub fn parse(source: &'a str) -> Result<Document<'a>> {
        Document::parse_with(source, ReadOptions::DOCUMENT)
    }

    /// Parses `source` with these limits and names, refusing what the module documentation
    /// lists.
    pub fn parse_with(source: &'a str, options: ReadOptions) -> Result<Document<'a>> {
        let max_bytes = options.limits.max_bytes;
        if source.len() > max_bytes {
            return Err(Error::Xml {
                message: format!(
                    "document is {} bytes, more than the limit of {max_bytes}",
                    source.len()
                ),
                line: 1,
                column: 1,
            });
        }
        let root = read_tree(source, options)?;
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

fn read_tree(source: &str, options: ReadOptions) -> Result<Element> {
    let max_depth = options.limits.max_depth;
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
                if stack.len() >= max_depth {
                    return Err(xml_error(
                        source,
                        offset,
                        format!("elements nested deeper than {max_depth} levels"),
                    ));
                }
                stack.push(element(source, &start, offset, options.names)?);
            }
            Event::Empty(start) => {
                let el = element(source, &start, offset, options.names)?;
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

/// Whether the reader refuses `c` in text and attribute values: XML 1.0 allows no control
/// characters but tab, line feed and carriage return, not even through a character
/// reference. A writer that must not produce a document this reader refuses (the ESX
/// backend's requests) replaces these.
pub fn is_refused_char(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{80}'..='\u{9f}')
}

/// quick-xml does not check characters, so this does ([`is_refused_char`]).
fn check_chars(source: &str, offset: u64, text: &str) -> Result<()> {
    match text.chars().find(|c| is_refused_char(*c)) {
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

fn element(
    source: &str,
    start: &BytesStart<'_>,
    offset: u64,
    names: ElementNames,
) -> Result<Element> {
    let name = match names {
        ElementNames::Qualified => start.name().as_ref().to_string(),
        ElementNames::Local => start.local_name().into_inner().to_string(),
    };
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

    #[test]
    fn local_names_drop_element_prefixes_and_keep_attribute_names() {
        let doc = "<s:Envelope xmlns:s='urn:e'><s:Body><v xsi:type='t'/></s:Body></s:Envelope>";
        let local = ReadOptions {
            names: ElementNames::Local,
            ..ReadOptions::DOCUMENT
        };
        let d = Document::parse_with(doc, local).unwrap();
        assert_eq!(d.root.name, "Envelope");
        assert_eq!(d.root.children[0].name, "Body");
        let v = &d.root.children[0].children[0];
        assert_eq!(
            v.attribute("xsi:type"),
            Some("t"),
            "attributes stay qualified"
        );
        let d = Document::parse(doc).unwrap();
        assert_eq!(
            (d.root.name.as_str(), d.root.children[0].name.as_str()),
            ("s:Envelope", "s:Body"),
            "snaptree's own documents keep qualified names"
        );
    }

    #[test]
    fn limits_are_the_callers() {
        let small = ReadOptions {
            limits: Limits {
                max_bytes: 100,
                max_depth: 3,
            },
            ..ReadOptions::DOCUMENT
        };
        let long = format!("<a>{}</a>", "x".repeat(100));
        let e = Document::parse_with(&long, small).unwrap_err().to_string();
        assert!(e.contains("107 bytes, more than the limit of 100"), "{e}");
        Document::parse(&long).expect("within the document limit");
        let four = "<a><b><c><d></d></c></b></a>";
        Document::parse_with("<a><b><c></c></b></a>", small).expect("three levels");
        let e = Document::parse_with(four, small).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 3 levels"), "{e}");

        let large = ReadOptions {
            limits: Limits {
                max_bytes: 2 * MAX_DOCUMENT_BYTES,
                max_depth: 2 * MAX_DEPTH,
            },
            ..ReadOptions::DOCUMENT
        };
        let big = format!("<a>{}</a>", "x".repeat(MAX_DOCUMENT_BYTES));
        assert_eq!(
            Document::parse_with(&big, large).unwrap().root.text.len(),
            MAX_DOCUMENT_BYTES
        );
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        Document::parse_with(&deep, large).expect("deeper than MAX_DEPTH, within the limit");
    }
}
