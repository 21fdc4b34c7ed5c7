//! Escaping of label values and help text.

/// Appends `value` escaped for a label value in either format: `\` as `\\`, `"` as `\"`,
/// newline as `\n`.
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends help text escaped for a `# HELP` line: `\` and newline in both formats, and `"`
/// too in OpenMetrics.
pub fn escape_help(help: &str, openmetrics: bool, out: &mut Vec<u8>) {
    for &b in help.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if openmetrics => out.extend_from_slice(b"\\\""),
            b => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        let cases = [
            ("plain", "plain"),
            (r"a\b", r"a\\b"),
            ("say \"hi\"", r#"say \"hi\""#),
            ("two\nlines", r"two\nlines"),
            ("ünï", "ünï"),
        ];
        for (input, expected) in cases {
            let mut out = String::new();
            escape_label_value(input, &mut out);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn help_text() {
        let mut text = Vec::new();
        escape_help("a \\ \"q\"\nb", false, &mut text);
        assert_eq!(text, b"a \\\\ \"q\"\\nb");
        let mut om = Vec::new();
        escape_help("a \\ \"q\"\nb", true, &mut om);
        assert_eq!(om, b"a \\\\ \\\"q\\\"\\nb");
    }
}
