//! What a rule set reports when it is wrong: [`Diagnostic`]s pointing at `file:line:column`, gathered into one
//! [`RulesError`], plus the two small tools every check uses to write them: turning a byte offset into a
//! position, and finding the nearest valid name for a "did you mean".
//!
//! Positions are 1-based; a column counts characters (not bytes) from the start of the line, as editors do.
//! Line 0 means "the whole file" (it could not be read) and is left out of the display.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Every problem found in a rule set, never just the first, sorted by file and position.
#[derive(Debug, thiserror::Error)]
#[error("{}", Lines(&self.diagnostics))]
pub struct RulesError {
    pub diagnostics: Vec<Diagnostic>,
}

/// One problem, at one place, with a message that says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the whole file (or directory).
    pub line: usize,
    /// 1-based, in characters; 0 together with `line`.
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    /// A problem with a whole file or directory, such as one that cannot be read.
    pub fn whole_file(file: &Path, message: String) -> Self {
        Self { file: file.to_path_buf(), line: 0, column: 0, message }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
        }
    }
}

struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// One rule file's name and text: what turns a byte span into a [`Diagnostic`].
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// A diagnostic at the start of `span`.
    pub fn at(&self, span: Range<usize>, message: String) -> Diagnostic {
        let (line, column) = position(self.text, span.start);
        Diagnostic { file: self.path.to_path_buf(), line, column, message }
    }

    /// `file:line:column` of `span`, for messages that point at a second place ("first defined at ...").
    pub fn locate(&self, span: Range<usize>) -> String {
        let (line, column) = position(self.text, span.start);
        format!("{}:{line}:{column}", self.path.display())
    }
}

/// 1-based line and character column of a byte offset; offsets past the end (or inside a character) are
/// clamped, so a span from any parser is safe to pass.
pub(super) fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The candidate nearest to `wrong`, if it is close enough to be a likely typo: at most one edit for short
/// names, about a third of the length for longer ones. Case is ignored; a swap of two letters is one edit.
pub(super) fn nearest<'c>(wrong: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let wrong = wrong.to_lowercase();
    let limit = (wrong.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&wrong, &candidate.to_lowercase()), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("tga" → "tag" is 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows are enough: the transposition step looks two rows back.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            current[j] = (previous[j] + 1).min(current[j - 1] + 1).min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = current[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The separator after "unknown `x`" in a message: "; did you mean `y`? " when a close candidate exists,
/// else "; ". What follows it is the list of valid names or the way to fix it.
pub(super) fn did_you_mean<'c>(wrong: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    nearest(wrong, candidates).map_or_else(|| "; ".to_owned(), |near| format!("; did you mean `{near}`? "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1));
        // `=` on line 2 follows a two-byte character: byte 10, character column 4.
        assert_eq!(position(text, 10), (2, 4));
        assert_eq!(position(text, 8), (2, 2), "an offset inside a character is clamped back");
        assert_eq!(position(text, 1_000), (3, 1));
    }

    #[test]
    fn near_names_are_suggested_and_far_ones_are_not() {
        let keys = ["event", "tag", "source", "pipeline", "stage", "from_stage"];
        assert_eq!(nearest("tga", keys), Some("tag"));
        assert_eq!(nearest("Sorce", keys), Some("source"));
        assert_eq!(nearest("fromstage", keys), Some("from_stage"));
        assert_eq!(nearest("colour", keys), None);
        assert_eq!(edit_distance("alce", "alice"), 1);
    }

    #[test]
    fn a_diagnostic_without_a_position_shows_only_the_file() {
        let whole = Diagnostic::whole_file(Path::new("rules/a.toml"), "cannot read it".into());
        assert_eq!(whole.to_string(), "rules/a.toml: cannot read it");
        let placed = Diagnostic { line: 3, column: 9, ..whole.clone() };
        let error = RulesError { diagnostics: vec![placed, whole] };
        assert_eq!(error.to_string(), "rules/a.toml:3:9: cannot read it\nrules/a.toml: cannot read it");
    }
}
