//! XML for the SVG views: escaping free text into text and attribute values,
//! so a note with `<` or `&` in it can never produce a file a browser
//! refuses. The tests parse every picture closelab writes with `roxmltree`
//! (a dev-dependency) to hold it to that.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_escape() {
        assert_eq!(escape(r#"a&b <c> "d" 'e'"#), "a&amp;b &lt;c&gt; &quot;d&quot; &#39;e&#39;");
        assert_eq!(escape("x\ny\u{1b}z\u{ffff} é ☃"), "x\\ny\\u{1b}z\\u{ffff} é ☃");
        let raw = "<&\"'>\u{0}]]>";
        let doc = format!("<a t=\"{0}\" u='{0}'>{0}</a>", escape(raw));
        let parsed = roxmltree::Document::parse(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
        let a = parsed.root_element();
        let want = r#"<&"'>\u{0}]]>"#;
        assert_eq!(a.attribute("t"), Some(want));
        assert_eq!(a.attribute("u"), Some(want));
        assert_eq!(a.text(), Some(want));
    }
}
