//! XML for the SVG views: escaping free text into text and attribute values,
//! and [`check`], a small strict well-formedness checker (XML 1.0, no DTD)
//! that the tests run on every picture closelab writes, so a note with `<`
//! or `&` in it can never produce a file a browser refuses.
//!
//! Pure string functions; no I/O.

/// `s` made safe for XML text and for attribute values in either quote:
/// `& < > " '` become references, and characters XML 1.0 does not allow
/// at all (control characters, U+FFFE, U+FFFF) are written as Rust escapes
/// (`\n`, `\u{1b}`), as the terminal views do.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// Whether XML 1.0 allows `c` anywhere in a document (production `Char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}')
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (c as u32) >= 0xc0
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit() || c == '-' || c == '.'
}

/// Checks that `doc` is a well-formed XML document: one root element,
/// every tag closed in order, attributes quoted and not repeated, every
/// `&` a known or numeric reference, no `<` in text or attribute values,
/// only XML characters. Comments, processing instructions and CDATA are
/// accepted; a DOCTYPE is not (closelab never writes one). The error names
/// the line: `line 3: closing tag </g> does not match <text>`.
pub fn check(doc: &str) -> Result<(), String> {
    Checker { s: doc, i: 0 }.document()
}

struct Checker<'a> {
    s: &'a str,
    i: usize,
}

impl Checker<'_> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, String> {
        let line = self.s[..self.i.min(self.s.len())].matches('\n').count() + 1;
        Err(format!("line {line}: {}", msg.into()))
    }

    fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.rest().starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) -> bool {
        let before = self.i;
        while let Some(c) = self.peek().filter(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
            self.i += c.len_utf8();
        }
        self.i > before
    }

    /// Everything up to `end`, which is consumed; the text must be XML chars.
    fn until(&mut self, end: &str, what: &str) -> Result<&str, String> {
        let Some(n) = self.rest().find(end) else {
            return self.err(format!("unterminated {what}"));
        };
        let start = self.i;
        let body = &self.s[start..start + n];
        if let Some(c) = body.chars().find(|c| !is_xml_char(*c)) {
            return self.err(format!("character U+{:04X} not allowed in XML", c as u32));
        }
        self.i += n + end.len();
        Ok(body)
    }

    fn document(&mut self) -> Result<(), String> {
        if let Some(c) = self.s.chars().find(|c| !is_xml_char(*c)) {
            let at = self.s.find(c).unwrap_or(0);
            self.i = at;
            return self.err(format!("character U+{:04X} not allowed in XML", c as u32));
        }
        if self.rest().starts_with("<?xml") {
            self.i += 5;
            self.until("?>", "XML declaration")?;
        }
        self.misc()?;
        if !self.rest().starts_with('<') {
            return self.err("expected the root element");
        }
        self.element()?;
        self.misc()?;
        if !self.rest().is_empty() {
            return self.err("content after the root element");
        }
        Ok(())
    }

    /// Whitespace, comments and processing instructions outside the root.
    fn misc(&mut self) -> Result<(), String> {
        loop {
            self.skip_space();
            if self.rest().starts_with("<!--") {
                self.comment()?;
            } else if self.rest().starts_with("<?") {
                self.pi()?;
            } else if self.rest().starts_with("<!") {
                return self.err("DOCTYPE and other declarations are not supported");
            } else {
                return Ok(());
            }
        }
    }

    fn comment(&mut self) -> Result<(), String> {
        self.i += 4;
        let body = self.until("-->", "comment")?;
        if body.contains("--") || body.ends_with('-') {
            return self.err("`--` inside a comment");
        }
        Ok(())
    }

    fn pi(&mut self) -> Result<(), String> {
        self.i += 2;
        let target = self.name()?;
        if target.eq_ignore_ascii_case("xml") {
            return self.err("XML declaration not at the start");
        }
        self.until("?>", "processing instruction")?;
        Ok(())
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.i;
        match self.peek() {
            Some(c) if is_name_start(c) => self.i += c.len_utf8(),
            _ => return self.err("expected a name"),
        }
        while let Some(c) = self.peek().filter(|c| is_name_char(*c)) {
            self.i += c.len_utf8();
        }
        Ok(self.s[start..self.i].to_string())
    }

    /// `&…;` at the current position (the `&` not yet consumed).
    fn reference(&mut self) -> Result<(), String> {
        self.i += 1;
        let Some(n) = self.rest().find(';').filter(|n| *n <= 10) else {
            return self.err("`&` is not the start of a reference (write &amp;)");
        };
        let body = &self.rest()[..n];
        let code = if let Some(hex) = body.strip_prefix("#x") {
            u32::from_str_radix(hex, 16).ok().filter(|_| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
        } else if let Some(dec) = body.strip_prefix('#') {
            dec.parse::<u32>().ok().filter(|_| dec.chars().all(|c| c.is_ascii_digit()))
        } else if matches!(body, "amp" | "lt" | "gt" | "quot" | "apos") {
            Some(0x20)
        } else {
            return self.err(format!("unknown entity &{body};"));
        };
        if !code.and_then(char::from_u32).is_some_and(is_xml_char) {
            return self.err(format!("bad character reference &{body};"));
        }
        self.i += n + 1;
        Ok(())
    }

    fn element(&mut self) -> Result<(), String> {
        let mut open: Vec<String> = Vec::new();
        loop {
            // At a `<` that starts a tag, comment, PI or CDATA.
            if self.eat("<!--") {
                self.i -= 4;
                self.comment()?;
            } else if self.eat("<![CDATA[") {
                if open.is_empty() {
                    return self.err("CDATA outside the root element");
                }
                self.until("]]>", "CDATA section")?;
            } else if self.rest().starts_with("<?") {
                self.pi()?;
            } else if self.eat("</") {
                let name = self.name()?;
                self.skip_space();
                if !self.eat(">") {
                    return self.err(format!("expected `>` after </{name}"));
                }
                match open.pop() {
                    Some(o) if o == name => {}
                    Some(o) => return self.err(format!("closing tag </{name}> does not match <{o}>")),
                    None => return self.err(format!("closing tag </{name}> without an opening tag")),
                }
                if open.is_empty() {
                    return Ok(());
                }
            } else if self.eat("<") {
                let name = self.name()?;
                let mut seen: Vec<String> = Vec::new();
                loop {
                    let spaced = self.skip_space();
                    if self.eat("/>") {
                        if open.is_empty() {
                            return Ok(());
                        }
                        break;
                    }
                    if self.eat(">") {
                        open.push(name.clone());
                        break;
                    }
                    if !spaced {
                        return self.err(format!("expected a space, `>` or `/>` in <{name}>"));
                    }
                    let attr = self.name()?;
                    if seen.contains(&attr) {
                        return self.err(format!("attribute {attr} repeated in <{name}>"));
                    }
                    self.skip_space();
                    if !self.eat("=") {
                        return self.err(format!("expected `=` after attribute {attr}"));
                    }
                    self.skip_space();
                    let q = match self.peek() {
                        Some(q @ ('"' | '\'')) => q,
                        _ => return self.err(format!("value of attribute {attr} is not quoted")),
                    };
                    self.i += 1;
                    loop {
                        match self.peek() {
                            None => return self.err(format!("unterminated value of attribute {attr}")),
                            Some(c) if c == q => {
                                self.i += 1;
                                break;
                            }
                            Some('<') => return self.err(format!("`<` in the value of attribute {attr}")),
                            Some('&') => self.reference()?,
                            Some(c) => self.i += c.len_utf8(),
                        }
                    }
                    seen.push(attr);
                }
            } else {
                return self.err("expected a tag");
            }
            // Character data up to the next `<`.
            loop {
                match self.peek() {
                    None => {
                        let o = open.last().cloned().unwrap_or_default();
                        return self.err(format!("end of document inside <{o}>"));
                    }
                    Some('<') => break,
                    Some('&') => self.reference()?,
                    Some(_) if self.rest().starts_with("]]>") => return self.err("`]]>` in text"),
                    Some(c) => self.i += c.len_utf8(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_escape() {
        assert_eq!(escape(r#"a&b <c> "d" 'e'"#), "a&amp;b &lt;c&gt; &quot;d&quot; &#39;e&#39;");
        assert_eq!(escape("x\ny\u{1b}z\u{ffff} é ☃"), "x\\ny\\u{1b}z\\u{ffff} é ☃");
        let doc = format!("<a t=\"{0}\" u='{0}'>{0}</a>", escape("<&\"'>\u{0}]]>"));
        assert_eq!(check(&doc), Ok(()), "{doc}");
    }

    #[test]
    fn test_check_accepts() {
        let ok = [
            "<a/>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"x\"><g a='1' b=\"2\"><t>x &amp; &#60; &#x3C;</t></g></svg>\n",
            "<!-- c --><a><?pi x?><![CDATA[<raw & stuff>]]><b\n  c = \"d\"\n/></a><!-- after -->",
            "<a>é ☃ &quot;&apos;&gt;</a>",
        ];
        for doc in ok {
            assert_eq!(check(doc), Ok(()), "{doc}");
        }
    }

    #[test]
    fn test_check_refuses() {
        let bad = [
            ("", "line 1: expected the root element"),
            ("<a>", "line 1: end of document inside <a>"),
            ("<a>\n<b></a>", "line 2: closing tag </a> does not match <b>"),
            ("<a></a><b/>", "content after the root element"),
            ("<a>x</a>y", "content after the root element"),
            ("<a x=1/>", "value of attribute x is not quoted"),
            ("<a x='1' x='2'/>", "attribute x repeated in <a>"),
            ("<a x='1'y='2'/>", "expected a space"),
            ("<a x='<'/>", "`<` in the value of attribute x"),
            ("<a x='1/>", "unterminated value"),
            ("<a>a & b</a>", "`&` is not the start of a reference"),
            ("<a>&nbsp;</a>", "unknown entity &nbsp;"),
            ("<a>&#0;</a>", "bad character reference &#0;"),
            ("<a>&#xZZ;</a>", "bad character reference"),
            ("<a>a ]]> b</a>", "`]]>` in text"),
            ("<a>\u{1}</a>", "character U+0001 not allowed"),
            ("<a><!-- a -- b --></a>", "`--` inside a comment"),
            ("<!DOCTYPE a><a/>", "DOCTYPE"),
            ("<a></b>", "closing tag </b> does not match <a>"),
            ("<1a/>", "expected a name"),
            ("<a><?xml x?></a>", "XML declaration not at the start"),
        ];
        for (doc, want) in bad {
            let err = check(doc).expect_err(doc);
            assert!(err.contains(want), "{doc:?}: {err}");
        }
    }
}
