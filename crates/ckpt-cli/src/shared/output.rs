//! Shared output helpers: the error line, colours, number formatting, and
//! tables.

use std::ffi::OsStr;
use std::io::{self, IsTerminal, Write};

/// Prints an error as one line on stderr: `ckpt: error: ...`, with the
/// causes joined by `: `.
pub fn error(err: &anyhow::Error) {
    let causes: Vec<String> = err.chain().map(ToString::to_string).collect();
    // Library errors already include their source in the message; drop a
    // trailing cause that the line already ends with.
    let mut line = String::new();
    for cause in causes {
        if !line.ends_with(&cause) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&cause);
        }
    }
    let _ = writeln!(io::stderr(), "ckpt: {} {}", red("error:"), printable(&line));
}

/// Prints a warning line on stderr, control characters escaped.
pub fn warning(text: &str) {
    let _ = writeln!(
        io::stderr(),
        "ckpt: {} {}",
        yellow("warning:"),
        printable(text)
    );
}

/// Whether output gets colours: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// [`use_colour`] for stderr, with this process's `NO_COLOR`.
fn stderr_colour() -> bool {
    use_colour(
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// clap's colours under the same rule: never when `NO_COLOR` is set or
/// neither stdout nor stderr is a terminal; otherwise clap's own choice
/// per stream.
pub fn colour_choice() -> clap::ColorChoice {
    let terminal = io::stdout().is_terminal() || io::stderr().is_terminal();
    if use_colour(terminal, std::env::var_os("NO_COLOR").as_deref()) {
        clap::ColorChoice::Auto
    } else {
        clap::ColorChoice::Never
    }
}

/// `text` in bold red on stderr when it takes colours.
fn red(text: &str) -> String {
    paint(text, "1;31", stderr_colour())
}

/// `text` in bold yellow on stderr when it takes colours.
fn yellow(text: &str) -> String {
    paint(text, "1;33", stderr_colour())
}

/// `text` wrapped in the SGR code `sgr` when `colour`, else as it is.
fn paint(text: &str, sgr: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// `text` as [`printable`], newlines and tabs escaped too: text from a
/// file that must stay on its line (a table cell, a name in a tree).
pub fn one_line(text: String) -> String {
    match printable(&text) {
        std::borrow::Cow::Borrowed(_) if !text.contains(['\n', '\t']) => text,
        escaped => escaped.replace('\n', "\\x0a").replace('\t', "\\x09"),
    }
}

/// `text` with every control character but newline and tab written as an
/// escape (`\x1b`, `\u{9b}`), so that names, metadata and values from a
/// file cannot move the cursor, erase lines or fake output on a terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            out.push_str(&escaped(c));
        } else {
            out.push(c);
        }
    }
    out.into()
}

fn is_unsafe(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

fn escaped(c: char) -> String {
    match u32::from(c) {
        n @ 0..=0x7f => format!("\\x{n:02x}"),
        n => format!("\\u{{{n:x}}}"),
    }
}

/// A writer that escapes control characters (as [`printable`]) in what
/// passes through: the command's human-readable output, which shows names,
/// metadata and values taken from files. JSON output passes unchanged (its
/// strings are already escaped).
pub struct Printable<W: Write> {
    inner: W,
    /// The first byte of a two-byte UTF-8 sequence cut by a write boundary.
    pending: Option<u8>,
}

impl<W: Write> Printable<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Printable {
            inner,
            pending: None,
        }
    }
}

impl<W: Write> Write for Printable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut start = 0;
        let mut i = 0;
        if let (Some(lead), Some(&next)) = (self.pending.take(), buf.first()) {
            if lead == 0xc2 && (0x80..=0x9f).contains(&next) {
                self.inner.write_all(escaped(char::from(next)).as_bytes())?;
                start = 1;
                i = 1;
            } else {
                self.inner.write_all(&[lead])?;
            }
        }
        while i < buf.len() {
            let b = buf[i];
            let c0 = (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f;
            let c1 = b == 0xc2 && buf.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n));
            if b == 0xc2 && i + 1 == buf.len() {
                self.inner.write_all(&buf[start..i])?;
                self.pending = Some(b);
                return Ok(buf.len());
            }
            if c0 || c1 {
                self.inner.write_all(&buf[start..i])?;
                let c = if c1 {
                    char::from(buf[i + 1])
                } else {
                    char::from(b)
                };
                self.inner.write_all(escaped(c).as_bytes())?;
                i += if c1 { 2 } else { 1 };
                start = i;
            } else {
                i += 1;
            }
        }
        self.inner.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(lead) = self.pending.take() {
            self.inner.write_all(&[lead])?;
        }
        self.inner.flush()
    }
}

/// An integer with thousands separators: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count for people, in binary units: `795.0 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration for people, rounded to its largest unit: `42 s`, `5 min`,
/// `3 h`, `2 d`.
pub fn human_age(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 36.0 * 3600.0 {
        format!("{:.0} h", s / 3600.0)
    } else {
        format!("{:.0} d", s / 86400.0)
    }
}

/// A table with left-aligned text columns and right-aligned numeric ones.
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns; `right[i]` right-aligns column `i`.
    pub fn new<S: Into<String>>(header: Vec<S>, right: Vec<bool>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            right,
            rows: Vec::new(),
        }
    }

    /// Adds a row, its cells escaped as [`printable`] (newlines and tabs
    /// too, which would make rows of their own) so that columns are
    /// measured as they will print.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(one_line).collect());
    }

    /// Writes the table, columns padded to their widest cell, in large
    /// writes (not one system call per line).
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut out = io::BufWriter::with_capacity(1 << 20, out);
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if i > 0 {
                    line.push_str("  ");
                }
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i + 1 < row.len() {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            writeln!(out, "{line}")?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_in_text_and_through_the_writer() {
        let hostile = "w\x1b[2K\r\x1b[1Ack\u{9b}31m ok\n";
        assert_eq!(
            printable(hostile),
            "w\\x1b[2K\\x0d\\x1b[1Ack\\u{9b}31m ok\n"
        );
        assert_eq!(
            printable("plain ünïcode\tand tab"),
            "plain ünïcode\tand tab"
        );
        // Through the writer, in pieces that cut a two-byte sequence.
        let mut out = Printable::new(Vec::new());
        let bytes = hostile.as_bytes();
        let cut = bytes.iter().position(|&b| b == 0xc2).unwrap() + 1;
        out.write_all(&bytes[..cut]).unwrap();
        out.write_all(&bytes[cut..]).unwrap();
        out.write_all("é".as_bytes()).unwrap();
        out.flush().unwrap();
        let text = String::from_utf8(out.inner).unwrap();
        assert_eq!(text, format!("{}é", printable(hostile)));
    }

    #[test]
    fn tables_align_escaped_cells_as_they_print() {
        let mut table = Table::new(vec!["name", "n"], vec![false, true]);
        table.row(vec!["a\u{0}b".into(), "1".into()]);
        table.row(vec!["plain".into(), "22".into()]);
        table.row(vec!["fake\nrow".into(), "3".into()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "name          n\na\\x00b        1\nplain        22\nfake\\x0arow   3\n"
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        let set = Some(OsStr::new("1"));
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, set));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, set));
        assert_eq!(paint("error:", "1;31", true), "\x1b[1;31merror:\x1b[0m");
        assert_eq!(paint("error:", "1;31", false), "error:");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
