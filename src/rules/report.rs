//! Rendering a [`Diagnostic`] for people: the offending line of the rule file with a caret under the column,
//! drawn by `miette` (a well-kept diagnostics crate) rather than by hand. `followd rules check` prints the
//! contract line (`file:line:column: message`) first, for tools, then this snippet.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use super::Diagnostic;

/// A diagnostic as miette sees it: the message, the file's text and one labelled span.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Snippet {
    message: String,
    code: NamedSource<String>,
    label: LabeledSpan,
}

impl miette::Diagnostic for Snippet {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.code)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(self.label.clone())))
    }
}

/// The byte offset of a 1-based line and character column in `text`.
fn offset(text: &str, line: usize, column: usize) -> Option<usize> {
    let start: usize = text.split_inclusive('\n').take(line.checked_sub(1)?).map(str::len).sum();
    let line_text = text.get(start..)?.lines().next().unwrap_or("");
    let within = line_text.char_indices().nth(column.saturating_sub(1)).map_or(line_text.len(), |(i, _)| i);
    Some(start + within)
}

/// The snippet for a diagnostic, read from its file now; `None` for whole-file problems or an unreadable file.
pub fn render(diagnostic: &Diagnostic) -> Option<String> {
    if diagnostic.line == 0 {
        return None;
    }
    let text = std::fs::read_to_string(&diagnostic.file).ok()?;
    let at = offset(&text, diagnostic.line, diagnostic.column)?;
    let width = text[at..].chars().next().map_or(0, char::len_utf8);
    let snippet = Snippet {
        message: diagnostic.message.clone(),
        code: NamedSource::new(diagnostic.file.display().to_string(), text),
        label: LabeledSpan::at(at..at + width, "here"),
    };
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).render_report(&mut out, &snippet).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snippet_shows_the_offending_line_with_a_caret_under_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "[users]\nalice = \"u\"\nbad = 12\n").unwrap();
        let diagnostic = Diagnostic { file, line: 3, column: 7, message: "expected a string".into() };
        let out = render(&diagnostic).unwrap();
        assert!(out.contains("expected a string"), "{out}");
        assert!(out.contains("bad = 12"), "{out}");
        // Columns in characters: the frame is drawn with multi-byte box characters.
        let column = |line: &str, needle: char| line.chars().position(|c| c == needle);
        let caret_line = out.lines().find(|l| l.contains('┬')).unwrap();
        let code_line = out.lines().find(|l| l.contains("bad = 12")).unwrap();
        assert_eq!(column(caret_line, '┬'), column(code_line, '1'), "{out}");
    }

    #[test]
    fn whole_file_problems_have_no_snippet() {
        assert!(render(&Diagnostic::whole_file(std::path::Path::new("/nope"), "unreadable".into())).is_none());
    }
}
