//! The XML data: UTF-16LE with a BOM, no declaration, root `<WIM>`, one
//! `<IMAGE INDEX="n">` per image. We keep the whole document as a small DOM
//! so that elements we do not know (Windows information, wimlib's flags)
//! survive our rewrites, as they do wimlib's.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::error::{invalid, Result, WimError};

/// Largest XML document we accept (wimlib's real ones are kilobytes).
pub const XML_MAX: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlNode {
    Element(Element),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<XmlNode>,
}

impl Element {
    pub fn new(name: &str) -> Element {
        Element {
            name: name.into(),
            ..Element::default()
        }
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find_map(|c| match c {
            XmlNode::Element(e) if e.name == name => Some(e),
            _ => None,
        })
    }

    fn child_mut(&mut self, name: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|c| match c {
            XmlNode::Element(e) if e.name == name => Some(e),
            _ => None,
        })
    }

    pub fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|c| match c {
                XmlNode::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Sets the text of child `name`, creating it (at the end) if missing.
    pub fn set_child_text(&mut self, name: &str, text: &str) {
        let node = XmlNode::Text(text.into());
        match self.child_mut(name) {
            Some(e) => e.children = vec![node],
            None => {
                let mut e = Element::new(name);
                e.children.push(node);
                self.children.push(XmlNode::Element(e));
            }
        }
    }

    /// Replaces (or adds) child `name` with an element holding HIGHPART/LOWPART.
    pub fn set_time(&mut self, name: &str, filetime: u64) {
        let mut e = Element::new(name);
        e.set_child_text("HIGHPART", &format!("0x{:08X}", filetime >> 32));
        e.set_child_text("LOWPART", &format!("0x{:08X}", filetime & 0xFFFF_FFFF));
        match self.child_mut(name) {
            Some(old) => *old = e,
            None => self.children.push(XmlNode::Element(e)),
        }
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for c in &self.children {
            match c {
                XmlNode::Element(e) => e.write(out),
                XmlNode::Text(t) => out.push_str(&escape(t)),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What we know about one image from the XML.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub index: u32,
    pub name: String,
    pub description: String,
    pub dir_count: u64,
    pub file_count: u64,
    pub total_bytes: u64,
    pub hard_link_bytes: u64,
    pub creation_time: u64,
    pub last_modification_time: u64,
    /// WimGuard extension element `WIMGUARDBACKUP`: the backup that made
    /// this image, so the catalog can find it after images are renumbered.
    pub backup_uuid: String,
    /// WimGuard extension element `WIMGUARDSOURCE`: the directory backed up
    /// (so a catalog rebuilt from archives knows it). Empty when unknown.
    pub source: String,
}

/// The parsed XML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WimXml {
    pub root: Element,
}

impl Default for WimXml {
    fn default() -> Self {
        WimXml {
            root: Element::new("WIM"),
        }
    }
}

fn parse_num(s: &str) -> u64 {
    s.trim().parse().unwrap_or(0)
}

fn parse_hex(s: &str) -> u64 {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u64::from_str_radix(t, 16).unwrap_or(0)
}

impl WimXml {
    /// Decodes UTF-16LE bytes (BOM optional) and parses the document.
    pub fn parse(raw: &[u8], image_count: u32) -> Result<WimXml> {
        if !raw.len().is_multiple_of(2) {
            return invalid("XML data has an odd number of bytes (not UTF-16)");
        }
        let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let units = units.strip_prefix(&[0xFEFF]).unwrap_or(&units);
        let text = String::from_utf16(units).map_err(|_| WimError::Invalid("XML data is not valid UTF-16".into()))?;
        let root = parse_dom(&text)?;
        if root.name != "WIM" {
            return invalid(format!("XML root element is <{}>, expected <WIM>", root.name));
        }
        if root.child("ESD").and_then(|e| e.child("ENCRYPTED")).is_some() {
            return Err(WimError::Unsupported("encrypted ESD file".into()));
        }
        let xml = WimXml { root };
        let mut seen = vec![false; image_count as usize];
        for img in xml.image_elements() {
            let idx: usize = img.attr("INDEX").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if idx == 0 || idx > image_count as usize || seen[idx - 1] {
                return invalid(format!(
                    "XML has an IMAGE with bad or duplicate INDEX {:?}",
                    img.attr("INDEX")
                ));
            }
            seen[idx - 1] = true;
        }
        if seen.iter().any(|s| !s) {
            return invalid(format!("XML does not describe all {image_count} images"));
        }
        Ok(xml)
    }

    fn image_elements(&self) -> impl Iterator<Item = &Element> {
        self.root.children.iter().filter_map(|c| match c {
            XmlNode::Element(e) if e.name == "IMAGE" => Some(e),
            _ => None,
        })
    }

    pub fn image_element_mut(&mut self, index: u32) -> Option<&mut Element> {
        self.root.children.iter_mut().find_map(|c| match c {
            XmlNode::Element(e)
                if e.name == "IMAGE" && e.attr("INDEX").and_then(|v| v.trim().parse().ok()) == Some(index) =>
            {
                Some(e)
            }
            _ => None,
        })
    }

    /// Information on every image, ordered by index.
    pub fn images(&self) -> Vec<ImageInfo> {
        let mut v: Vec<ImageInfo> = self
            .image_elements()
            .map(|e| {
                let t = |n: &str| e.child(n).map(|c| c.text()).unwrap_or_default();
                let time = |n: &str| {
                    e.child(n).map_or(0, |c| {
                        let hi = c.child("HIGHPART").map_or(0, |x| parse_hex(&x.text()));
                        let lo = c.child("LOWPART").map_or(0, |x| parse_hex(&x.text()));
                        (hi << 32) | (lo & 0xFFFF_FFFF)
                    })
                };
                ImageInfo {
                    index: e.attr("INDEX").and_then(|v| v.trim().parse().ok()).unwrap_or(0),
                    name: t("NAME"),
                    description: t("DESCRIPTION"),
                    dir_count: parse_num(&t("DIRCOUNT")),
                    file_count: parse_num(&t("FILECOUNT")),
                    total_bytes: parse_num(&t("TOTALBYTES")),
                    hard_link_bytes: parse_num(&t("HARDLINKBYTES")),
                    creation_time: time("CREATIONTIME"),
                    last_modification_time: time("LASTMODIFICATIONTIME"),
                    backup_uuid: t("WIMGUARDBACKUP"),
                    source: t("WIMGUARDSOURCE"),
                }
            })
            .collect();
        v.sort_by_key(|i| i.index);
        v
    }

    /// Adds an IMAGE element before the top-level TOTALBYTES.
    pub fn add_image(&mut self, info: &ImageInfo) {
        let mut e = Element::new("IMAGE");
        e.attrs.push(("INDEX".into(), info.index.to_string()));
        if !info.name.is_empty() {
            e.set_child_text("NAME", &info.name);
        }
        if !info.description.is_empty() {
            e.set_child_text("DESCRIPTION", &info.description);
        }
        Self::fill_counts(&mut e, info);
        e.set_time("CREATIONTIME", info.creation_time);
        e.set_time("LASTMODIFICATIONTIME", info.last_modification_time);
        if !info.backup_uuid.is_empty() {
            e.set_child_text("WIMGUARDBACKUP", &info.backup_uuid);
        }
        if !info.source.is_empty() && valid_xml_text(&info.source) {
            e.set_child_text("WIMGUARDSOURCE", &info.source);
        }
        let pos = self
            .root
            .children
            .iter()
            .position(|c| matches!(c, XmlNode::Element(x) if x.name != "IMAGE"))
            .unwrap_or(self.root.children.len());
        self.root.children.insert(pos, XmlNode::Element(e));
    }

    fn fill_counts(e: &mut Element, info: &ImageInfo) {
        e.set_child_text("DIRCOUNT", &info.dir_count.to_string());
        e.set_child_text("FILECOUNT", &info.file_count.to_string());
        e.set_child_text("TOTALBYTES", &info.total_bytes.to_string());
        e.set_child_text("HARDLINKBYTES", &info.hard_link_bytes.to_string());
    }

    /// Removes image `index` and renumbers the later ones.
    pub fn remove_image(&mut self, index: u32) {
        self.root.children.retain(|c| !matches!(c, XmlNode::Element(e) if e.name == "IMAGE" && e.attr("INDEX").and_then(|v| v.trim().parse::<u32>().ok()) == Some(index)));
        for c in &mut self.root.children {
            if let XmlNode::Element(e) = c {
                if e.name == "IMAGE" {
                    if let Some(i) = e.attr("INDEX").and_then(|v| v.trim().parse::<u32>().ok()) {
                        if i > index {
                            for a in &mut e.attrs {
                                if a.0 == "INDEX" {
                                    a.1 = (i - 1).to_string();
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The id of the codec plugin that compressed this archive
    /// (`<WIM><WIMGUARDCODEC>`), when the header says a plugin did.
    pub fn plugin_codec(&self) -> Option<String> {
        self.root
            .child("WIMGUARDCODEC")
            .map(|e| e.text())
            .filter(|t| !t.is_empty())
    }

    /// Records the codec plugin's id (kept before the top-level TOTALBYTES).
    pub fn set_plugin_codec(&mut self, id: &str) {
        self.root.set_child_text("WIMGUARDCODEC", id);
    }

    /// Does an image already use this (non-empty) name?
    pub fn name_in_use(&self, name: &str) -> bool {
        !name.is_empty() && self.images().iter().any(|i| i.name == name)
    }

    /// Sets the top-level TOTALBYTES (the XML's own file offset, as wimlib writes it).
    pub fn set_total_bytes(&mut self, v: u64) {
        self.root.set_child_text("TOTALBYTES", &v.to_string());
    }

    /// Encodes as stored: BOM, UTF-16LE, trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::new();
        self.root.write(&mut s);
        s.push('\n');
        let mut out = vec![0xFF, 0xFE];
        for u in s.encode_utf16() {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out
    }
}

/// XML 1.0 allows no control characters other than tab, newline and CR
/// (libxml2, which wimlib uses, rejects them), not even escaped.
pub fn valid_xml_text(s: &str) -> bool {
    !s.chars()
        .any(|c| (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{FFFE}' || c == '\u{FFFF}')
}

fn valid_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

fn parse_dom(text: &str) -> Result<Element> {
    if !valid_xml_text(text) {
        return invalid("XML data contains control characters");
    }
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let err = |e: &dyn std::fmt::Display| WimError::Invalid(format!("XML data is not well-formed: {e}"));
    loop {
        let ev = reader.read_event().map_err(|e| err(&e))?;
        match ev {
            Event::Start(ref s) | Event::Empty(ref s) => {
                if root.is_some() {
                    return invalid("XML data has more than one root element");
                }
                let mut e = Element::new(&String::from_utf8_lossy(s.name().as_ref()));
                if !valid_xml_name(&e.name) {
                    return invalid(format!("XML data has an invalid element name {:?}", e.name));
                }
                for a in s.attributes() {
                    let a = a.map_err(|e| err(&e))?;
                    let v = a.unescape_value().map_err(|e| err(&e))?;
                    let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    if !valid_xml_name(&k) || !valid_xml_text(&v) {
                        return invalid(format!("XML data has an invalid attribute {k:?}"));
                    }
                    e.attrs.push((k, v.into_owned()));
                }
                if matches!(ev, Event::Empty(_)) {
                    attach(&mut stack, &mut root, e);
                } else {
                    stack.push(e);
                    if stack.len() > 256 {
                        return invalid("XML data is nested too deeply");
                    }
                }
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| WimError::Invalid("XML data has an unmatched end tag".into()))?;
                attach(&mut stack, &mut root, done);
            }
            Event::Text(t) => {
                let t = t.decode().map_err(|e| err(&e))?;
                push_text(&mut stack, &t);
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().map_err(|e| err(&e))? {
                    Some(c) if valid_xml_text(&c.to_string()) => c.to_string(),
                    Some(c) => {
                        return invalid(format!(
                            "XML data references character {:#x}, not allowed in XML",
                            c as u32
                        ))
                    }
                    None => {
                        let name = r.decode().map_err(|e| err(&e))?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(v) => v.to_string(),
                            None => return invalid(format!("XML data uses unknown entity &{name};")),
                        }
                    }
                };
                push_text(&mut stack, &text);
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.children
                        .push(XmlNode::Text(String::from_utf8_lossy(&c).into_owned()));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return invalid("XML data ends inside an element");
    }
    let mut root = root.ok_or_else(|| WimError::Invalid("XML data has no root element".into()))?;
    trim_whitespace(&mut root);
    Ok(root)
}

/// Appends text to the open element, merging with a preceding text node
/// (entity references arrive as separate events).
fn push_text(stack: &mut [Element], t: &str) {
    if let Some(top) = stack.last_mut() {
        if let Some(XmlNode::Text(prev)) = top.children.last_mut() {
            prev.push_str(t);
        } else {
            top.children.push(XmlNode::Text(t.to_string()));
        }
    }
}

/// Drops whitespace-only text between elements (wimlib writes none).
fn trim_whitespace(e: &mut Element) {
    let has_elements = e.children.iter().any(|c| matches!(c, XmlNode::Element(_)));
    e.children
        .retain(|c| !(has_elements && matches!(c, XmlNode::Text(t) if t.trim().is_empty())));
    for c in &mut e.children {
        if let XmlNode::Element(x) = c {
            trim_whitespace(x);
        }
    }
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, done: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(XmlNode::Element(done)),
        None => *root = Some(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_keeps_unknown_elements() {
        let mut x = WimXml::default();
        x.add_image(&ImageInfo {
            index: 1,
            name: "a & <b>".into(),
            creation_time: 0x01DD7C2C_8FB40BD8,
            ..ImageInfo::default()
        });
        x.set_total_bytes(474);
        let mut raw = x.to_bytes();
        assert_eq!(&raw[..2], &[0xFF, 0xFE]);
        let back = WimXml::parse(&raw, 1).unwrap();
        assert_eq!(back.images()[0].name, "a & <b>");
        assert_eq!(back.images()[0].creation_time, 0x01DD7C2C_8FB40BD8);
        raw = "\u{feff}<WIM><IMAGE INDEX=\"1\"><NAME>x</NAME><WINDOWS><ARCH>9</ARCH></WINDOWS></IMAGE></WIM>"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let mut w = WimXml::parse(&raw, 1).unwrap();
        w.add_image(&ImageInfo {
            index: 2,
            name: "y".into(),
            ..ImageInfo::default()
        });
        let again = WimXml::parse(&w.to_bytes(), 2).unwrap();
        assert!(again
            .root
            .children
            .iter()
            .any(|c| matches!(c, XmlNode::Element(e) if e.child("WINDOWS").is_some())));
        assert!(WimXml::parse(&raw, 2).is_err());
        let mut r = again.clone();
        r.remove_image(1);
        assert_eq!(r.images()[0].name, "y");
        assert_eq!(r.images()[0].index, 1);
    }
}
